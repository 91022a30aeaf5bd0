"""The study's stages (README, Layout). ``python -m stages.<stage>`` runs this file first, before anything
loads numpy: the one place to cap numpy's SIMD kernels at AVX2 for every stage (stages.lib.numpy_simd)."""

from stages.lib import numpy_simd

numpy_simd.cap()
