"""Start TensorFlow for a stage: numerics fixed before the import, native log lines kept off stderr.

Portable numerics: oneDNN on, capped at AVX2. TensorFlow turns oneDNN on by default only
on CPUs with AVX512_VNNI, AVX512_BF16 or AMX, and its Eigen path gives other bytes per CPU
and per thread count; with oneDNN forced on and capped at AVX2, every x86-64 CPU that
TensorFlow supports runs the same kernels (README, "Same numbers on any machine").
"""

from __future__ import annotations

import os
import re
import sys
import threading
from contextlib import contextmanager
from types import ModuleType

from stages.lib.schema import ComputeParams

PORTABLE_ENV = {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# What TensorFlow's C++ code prints while it loads, before absl logging (and with it
# TF_CPP_MIN_LOG_LEVEL) applies: "I0000 00:00:1795918173.911019    2850 port.cc:153] oneDNN ...".
NATIVE_LOG_LINE = re.compile(
    r"(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d+:\d+:\d+\.\d+ +\d+ [\w.-]+:\d+\] .*)\n?"
)


def numerics_env(numerics: str) -> dict[str, str]:
    """Environment variables TensorFlow must see at import for these numerics."""
    return dict(PORTABLE_ENV) if numerics == "portable" else {}


def load_keras_model(compute: ComputeParams) -> ModuleType:
    """Import stages.lib.keras_model (and with it TensorFlow) set up as ``compute`` says."""
    if "tensorflow" in sys.modules:
        wrong = {k: v for k, v in numerics_env(compute.numerics).items() if os.environ.get(k) != v}
        if wrong:
            raise RuntimeError(f"TensorFlow was imported before its numerics were set (needs {wrong})")
    os.environ.update(numerics_env(compute.numerics))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_log_lines_dropped():
        from stages.lib import keras_model  # a plain import: -X importtime reports it, importlib's would not
    keras_model.use_threads(compute.threads)
    return keras_model


@contextmanager
def native_log_lines_dropped():
    """Pass everything written to file descriptor 2 on to stderr as it comes, but native log lines.

    A pipe, not a temporary file, so that other output (Python warnings, -X importtime) still
    arrives while TensorFlow loads, and a Ctrl-C in the middle loses nothing.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    relay = threading.Thread(target=_relay, args=(read_end, saved), daemon=True)
    relay.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the relay reads to the end and stops
        relay.join()
        os.close(saved)


def _relay(read_end: int, out: int) -> None:
    with os.fdopen(read_end, "rb") as pipe:
        for line in pipe:
            if not NATIVE_LOG_LINE.fullmatch(line.decode(errors="replace")):
                os.write(out, line)
