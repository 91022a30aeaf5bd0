"""Plumbing, the floor above stages/lib/: how the stages read params, read and write records, name paths and end.
Nothing here changes what a stage computes, so no dvc.yaml lists these modules as deps and editing one reruns
nothing (tests/test_deps.py holds every stage to that). What changes results is in stages/lib/, below; what
everything uses is in stages/ground/, below that."""
