"""stages.lib.tf_runtime and stages.plumbing.machine: numerics fixed before TensorFlow loads, a stderr
without TensorFlow's native log lines, and a record of the machine behind every result.

TensorFlow runs in child processes here: its numerics are fixed at import, once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from harness import ROOT

from stages.lib.tf_runtime import NATIVE_LOG_LINE, PORTABLE_ENV, numerics_env
from stages.plumbing import machine

TF_CHILD_TIMEOUT_S = 300  # a child that imports TensorFlow: seconds, more on a busy machine

# Seen on an AVX-512 VNNI CPU, where TensorFlow turns oneDNN on and says so while it loads.
ONEDNN_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1795918173.911019    2850 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. "
    "To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n",
    "W0000 00:00:1795918175.723054    2850 cpu_feature_guard.cc:42] This TensorFlow binary is optimized\n",
)


@pytest.mark.parametrize("line", ONEDNN_LINES)
def test_native_log_lines_are_recognised(line):
    assert NATIVE_LOG_LINE.fullmatch(line)


@pytest.mark.parametrize("line", [
    "interrupted: outputs were left as they were before this stage\n",
    "error: data/prepared/x_train.npy is missing\n",
    "E0000 00:00:1795918173.911019    2850 some.cc:1] a native error stays visible\n",
    "import time:      1234 |       5678 | tensorflow\n",
    "WARNING: something else\n",
])
def test_other_lines_are_not_native_log_lines(line):
    assert not NATIVE_LOG_LINE.fullmatch(line)


def test_portable_numerics_force_onednn_capped_at_avx2_and_native_leaves_tensorflow_alone():
    assert numerics_env("portable") == PORTABLE_ENV == {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert numerics_env("native") == {}


START_IN_CHILD = """
import json, os, sys
from stages.lib.schema import ComputeParams
from stages.lib.tf_runtime import load_keras_model
print("before", file=sys.stderr, flush=True)
km = load_keras_model(ComputeParams(steps_per_execution=1, numerics=sys.argv[1], threads=int(sys.argv[2])))
import tensorflow as tf
km.build_model(km.Arch("t", (4,)), 0)  # runs ops: the thread setting is in force
print("after", file=sys.stderr, flush=True)
print(json.dumps({"threads": tf.config.threading.get_intra_op_parallelism_threads(),
                  **{key: os.environ.get(key) for key in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")}}))
"""


def child_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in PORTABLE_ENV}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


@pytest.mark.slow
def test_portable_start_sets_the_numerics_and_threads_and_keeps_native_log_lines_off_stderr():
    # oneDNN on: TensorFlow logs at import on every CPU, which is what must not reach stderr
    done = subprocess.run([sys.executable, "-c", START_IN_CHILD, "portable", "2"], env=child_env(),
                          capture_output=True, text=True, check=True,
                          timeout=TF_CHILD_TIMEOUT_S)
    assert done.stderr == "before\nafter\n"
    assert json.loads(done.stdout) == {"threads": 2, **PORTABLE_ENV}


@pytest.mark.slow
def test_native_start_leaves_the_environment_as_the_user_set_it():
    done = subprocess.run([sys.executable, "-c", START_IN_CHILD, "native", "1"],
                          env=child_env(TF_ENABLE_ONEDNN_OPTS="1"), capture_output=True, text=True, check=True,
                          timeout=TF_CHILD_TIMEOUT_S)
    assert done.stderr == "before\nafter\n"
    assert json.loads(done.stdout) == {"threads": 1, "TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": None}


@pytest.mark.slow
def test_a_plain_import_would_print_the_native_lines():
    """Control: what the tests above keep off stderr is really there without the filter."""
    done = subprocess.run([sys.executable, "-c", "import tensorflow"], env=child_env(**PORTABLE_ENV),
                          capture_output=True, text=True, check=True,
                          timeout=TF_CHILD_TIMEOUT_S)
    assert any(NATIVE_LOG_LINE.fullmatch(line) for line in done.stderr.splitlines(keepends=True)), done.stderr


@pytest.mark.slow
def test_output_written_while_tensorflow_loads_still_arrives():
    """Python's own stderr (here -X importtime) passes through as it comes, with nothing dropped."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", START_IN_CHILD, "portable", "1"],
                          env=child_env(), capture_output=True, text=True, check=True,
                          timeout=TF_CHILD_TIMEOUT_S)
    lines = done.stderr.splitlines()
    assert "before" in lines and "after" in lines
    assert any(line.split("|")[-1].strip() == "tensorflow" for line in lines)
    assert not any(NATIVE_LOG_LINE.fullmatch(line) for line in lines)


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni avx512_bf16 something_else
processor\t: 1
model name\t: AMD EPYC 9R14
"""


def test_cpu_model_and_relevant_isa_flags():
    assert machine.cpu(CPUINFO) == ("AMD EPYC 9R14", "sse4_2 avx avx2 fma avx512f avx512_vnni avx512_bf16")


def test_record_of_a_training_stage_names_numerics_threads_and_versions(monkeypatch):
    import numpy

    monkeypatch.setitem(os.environ, "TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.setitem(os.environ, "ONEDNN_MAX_CPU_ISA", "AVX2")
    record = machine.record("portable", 1)
    assert record["numerics"] == "portable" and record["intra_op_threads"] == 1
    assert record["onednn"] == PORTABLE_ENV
    assert record["numpy"] == numpy.__version__
    assert record["python"].count(".") == 2 and record["cores"] == os.cpu_count()
    assert "numerics" not in machine.record()
