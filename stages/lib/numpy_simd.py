"""numpy's SIMD kernels capped at AVX2, as tf_runtime caps oneDNN's: the same bytes on any x86-64 CPU.

numpy picks its kernels per CPU when it loads. On CPUs with AVX-512 its float64 exp, log and power
use other kernels than on AVX2 ones, which round differently in the last bit: 98 of the range test's
1,800 rates ``start_lr * factor**step`` differ, and with them a rule's pick (issue 26). Below AVX-512
those functions are the C library's, on every CPU. numpy reads ``NPY_DISABLE_CPU_FEATURES`` once,
at import, so ``stages/__init__.py`` calls ``cap()`` before anything imports numpy.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

VARIABLE = "NPY_DISABLE_CPU_FEATURES"
# numpy's dispatch targets above AVX2, as each pinned numpy names them: 2.4 groups AVX-512 as X86_V4.
ABOVE_AVX2 = {
    (2, 2): ("AVX512F", "AVX512CD", "AVX512_KNL", "AVX512_KNM", "AVX512_SKX", "AVX512_CLX", "AVX512_CNL",
             "AVX512_ICL"),
    (2, 4): ("X86_V4", "AVX512_ICL", "AVX512_SPR"),
}


def above_avx2(numpy_version: str) -> tuple[str, ...]:
    """numpy's names for its dispatch targets above AVX2, for this numpy version (the newest listed that is
    not newer)."""
    major, minor = (int(part) for part in numpy_version.split(".")[:2])
    known = [v for v in sorted(ABOVE_AVX2) if v <= (major, minor)]
    return ABOVE_AVX2[known[-1]] if known else ABOVE_AVX2[min(ABOVE_AVX2)]


def cap() -> None:
    """Tell numpy, before it loads, to use no kernel above AVX2. Too late once numpy is loaded: the caller
    must run first (tests/test_numerics.py checks that every stage process and the tests are capped)."""
    if "numpy" not in sys.modules:
        ours = above_avx2(version("numpy"))
        theirs = [name for name in os.environ.get(VARIABLE, "").split() if name not in ours]
        os.environ[VARIABLE] = " ".join([*theirs, *ours])


def active_above_avx2() -> list[str]:
    """numpy's dispatch targets above AVX2 that this process uses: empty when capped, or on a CPU without
    AVX-512."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    avx2_level = {"SSSE3", "SSE41", "POPCNT", "SSE42", "AVX", "F16C", "FMA3", "AVX2", "X86_V2", "X86_V3"}
    return [name for name in __cpu_dispatch__ if name not in avx2_level and __cpu_features__.get(name)]
