"""Plumbing: how the stages read params, check records, name paths, write files and end. Nothing here changes
what a stage computes, so no dvc.yaml lists these modules as deps and editing one reruns nothing (tests/test_deps.py
holds every stage to that). What changes results is in stages/lib/."""
