"""The same bits on any x86-64 CPU: numpy capped at AVX2 in every stage process and in the tests, and the
exact bits of the rate schedule and of every rule's pick, pinned (issue 26: numpy's AVX-512 kernels moved a
pick's last digit). CI runs on whatever CPU it gets, so a drift shows here wherever one appears.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
from harness import ROOT
from numpy._core._multiarray_umath import __cpu_dispatch__

from stages.lib import numpy_simd
from stages.lib.lr_finder import RULES, Curve, batch_sizes, exponential_lrs, smooth

AVX2_OR_BELOW = {"SSSE3", "SSE41", "POPCNT", "SSE42", "AVX", "F16C", "FMA3", "AVX2", "X86_V2", "X86_V3"}


def test_the_cap_names_every_numpy_target_above_avx2():
    """Checked on any CPU: the names come from how numpy was built, not from this machine."""
    above = [name for name in __cpu_dispatch__ if name not in AVX2_OR_BELOW]
    assert above and set(above) <= set(numpy_simd.above_avx2(np.__version__)), (above, np.__version__)


def test_the_tests_run_with_numpy_capped():
    assert numpy_simd.active_above_avx2() == []  # conftest imports stages before numpy


def test_a_stage_process_runs_with_numpy_capped():
    """`python -m stages.<stage>` imports the stages package first, as this does."""
    code = "import stages, numpy; from stages.lib.numpy_simd import active_above_avx2; print(active_above_avx2())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_user_setting_of_the_variable_is_kept_beside_the_cap(monkeypatch):
    monkeypatch.delitem(sys.modules, "numpy")  # as before numpy loads; the module object stays where it is
    monkeypatch.setenv(numpy_simd.VARIABLE, "X86_V3")  # a name the cap never sets, in any numpy
    numpy_simd.cap()
    names = os.environ[numpy_simd.VARIABLE].split()
    assert names[0] == "X86_V3" and set(numpy_simd.above_avx2(np.__version__)) <= set(names)


def test_the_default_schedule_has_these_exact_bits():
    """lr_range's default: 0.001 x 1.005**step. Row 1364 is the notebook's pick doubled on base's sweep, where
    numpy's AVX-512 power gave 0x1.cd14fff053407p-1."""
    lrs = exponential_lrs(0.001, 1.005, 1800)
    assert lrs[1364].hex() == "0x1.cd14fff053408p-1"
    digest = hashlib.sha256(lrs.tobytes()).hexdigest()
    assert digest == "1fc6be11729cbe98fcb1be64d70bce3acbea08f721f7cdfbd1ceaf0a22c4d341"


def pinned_curve() -> Curve:
    """A sweep on the default schedule that falls, flattens and blows up after row 1364, with noise: every rule
    picks, the notebook's at row 1364's rate halved."""
    n = 1400
    k = np.arange(n) / n
    losses = 2.3 * np.exp(-6 * k) + 0.3 + np.where(np.arange(n) > 1364, 5.0, 0.0)
    losses = np.abs(losses + np.random.default_rng(7).normal(0, 0.02, n))
    return Curve(exponential_lrs(0.001, 1.005, n), losses, smooth(losses, 0.98), batch_sizes(55_000, 32, n),
                 1719, 1719, n - 1, 0.98, 4.0)


# Uncapped, numpy's AVX-512 kernels give the notebook 0x1.cd14fff053407p-2 and slide 0x1.abd8862f5af24p-1.
PINNED_PICKS = {
    "notebook": ("0x1.cd14fff053408p-2", 1225),
    "fastai_valley": ("0x1.8ed86f5104f33p-4", 918),
    "fastai_slide": ("0x1.abd8862f5af25p-1", 1349),
    "fastai_minimum": ("0x1.6f07cd018851fp-4", 901),
    "fastai_steep": ("0x1.382e016e61171p-9", 174),
    "lightning": ("0x1.7588bdb3a0e3dp-10", 71),
    "flat_center": ("0x1.832e338701503p-2", 1190),
}


def test_every_rule_picks_these_exact_bits():
    curve = pinned_curve()
    assert {rule: (pick(curve).lr.hex(), pick(curve).index) for rule, pick in RULES.items()} == PINNED_PICKS
