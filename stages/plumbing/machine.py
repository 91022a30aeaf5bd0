"""Which machine and software made a result.

The machine (record()) goes into every stage's timing record, never into a result: results
are the same bytes on every machine. The software (software()) goes into the train record:
under one lock file it is the same everywhere, and the report names it.
"""

from __future__ import annotations

import importlib.metadata
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


# The packages that compute results, each under the distribution names it is installed as (the locks pin
# tensorflow-cpu).
SOFTWARE = {"tensorflow": ("tensorflow-cpu", "tensorflow"), "keras": ("keras",), "numpy": ("numpy",)}


def software() -> dict[str, str]:
    """Python (major.minor) and the installed versions of the packages that compute results: the same on every
    machine under one lock file, so a record holding them stays byte for byte the same."""
    out = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    for key, names in SOFTWARE.items():
        out[key] = next((version for version in map(_installed, names) if version), "not installed")
    return out


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
