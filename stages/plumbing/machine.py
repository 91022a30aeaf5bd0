"""Which machine and software made a result: written beside every stage's timings.

Kept out of the metrics that must match across machines, so that a `dvc metrics diff`
which changes only because the machine changed shows that, and nothing else.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The instruction sets that decide which kernels TensorFlow, oneDNN and OpenBLAS may pick.
RELEVANT_ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                "amx_tile", "amx_bf16", "amx_int8")


def cpu(cpuinfo: str) -> tuple[str, str]:
    """(CPU model name, the relevant ISA flags it has) from the text of /proc/cpuinfo.

    The flags are one string, not a list: `dvc metrics diff` shows strings and skips lists."""
    fields = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", platform.processor() or "unknown"), " ".join(f for f in RELEVANT_ISA if f in flags)


def record(numerics: str | None = None, threads: int | None = None) -> dict:
    """CPU, cores, numerics and versions of this process. TensorFlow and Keras are listed when
    this process has loaded them; numerics and threads only for stages that train."""
    try:
        model, isa = cpu(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        model, isa = platform.processor() or "unknown", ""
    out = {"cpu": model, "isa": isa, "cores": os.cpu_count(), "python": platform.python_version()}
    for name in ("numpy", "tensorflow", "keras"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = module.__version__
    if numerics is not None:
        out["numerics"] = numerics
        out["onednn"] = {key: os.environ.get(key) for key in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")}
    if threads is not None:
        out["intra_op_threads"] = threads
    return out
