"""The ground floor: what every other floor uses, importing nothing of the project's own above it. Errors, whole-file
writes, the stopwatch and the notation for a record's shape. Nothing here changes what a stage computes, so no
dvc.yaml lists these modules as deps and editing one reruns nothing (tests/test_deps.py holds every stage to that).
The floors, bottom up: ground, lib (what changes results), plumbing (params, paths, records, how a stage ends),
then the stages, scripts and bench (docs/layout.md)."""
