"""The evidence pipeline's stages (evidence/dvc.yaml): one process per (arch, seed) and kind of run."""
