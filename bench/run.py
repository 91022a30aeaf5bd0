"""`make bench`: the notebook way against `dvc repro -f` of this pipeline, on the same machine.

Prints wall time and peak memory of each, their ratio, the pipeline's per-stage wall
times, a no-op `dvc repro` and a one-arch change. The pipeline runs in a temporary
clone of this repo (with data/raw copied in), so the workspace is left as it was.
Figures from one run on a possibly busy machine: compare ratios, not seconds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stages.lib.cli import run
from stages.lib.errors import StageError
from stages.lib.params import dump_raw, load_params, load_raw
from stages.lib.paths import RAW_DIR

USAGE = "usage: python -m bench.run [--pipeline-only]"

# Runs a command and reports the peak RSS of its process tree (children it waited for).
MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('peak_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)
RUNNING = re.compile(r"Running stage '([^']+)'")


def measured(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """(seconds, peak MiB, stdout) of ``cmd``; per-stage lines are timestamped as they stream."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", MEASURE, *cmd], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = [f"{time.perf_counter() - started:8.2f} {line}" for line in proc.stdout]
    stderr = proc.stderr.read()
    if proc.wait() != 0:
        print("".join(lines), stderr, sep="\n", file=sys.stderr)
        raise StageError(f"{' '.join(cmd)} failed (its output is above)")
    peak = int(re.search(r"peak_kib (\d+)", stderr).group(1)) // 1024
    return time.perf_counter() - started, peak, "".join(lines)


def stage_times(log: str, total: float) -> list[tuple[str, float]]:
    """Wall time per stage: from its 'Running stage' line to the next one (or the end)."""
    marks = [(float(line.split()[0]), m.group(1)) for line in log.splitlines() if (m := RUNNING.search(line))]
    ends = [t for t, _ in marks[1:]] + [total]
    return [(name, end - start) for (start, name), end in zip(marks, ends)]


def main(argv: list[str]) -> None:
    if argv not in ([], ["--pipeline-only"]):
        raise StageError(f"{USAGE} (got {' '.join(argv)})")
    root = Path.cwd()
    if not all((RAW_DIR / name).is_file() for name in load_params().data.sha256):
        raise StageError(f"MNIST is not in {RAW_DIR}/: run `dvc repro download` first")
    dvc = str(Path(sys.executable).parent / "dvc")
    with tempfile.TemporaryDirectory(prefix="bench.") as tmp:
        clone = Path(tmp) / "project"
        subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
        shutil.copytree(RAW_DIR, clone / RAW_DIR)
        # "Data already downloaded": the download stage copies and verifies a local copy
        # instead of going to the network, which would time the network.
        local = Path(tmp) / "mnist"
        shutil.copytree(RAW_DIR, local)
        params = load_raw(clone / "params.yaml")
        params["data"]["sources"].insert(0, {"local": str(local)})
        (clone / "params.yaml").write_text(dump_raw(params))

        if argv == ["--pipeline-only"]:  # for trying a change: (b) alone
            a_s, a_mib = float("nan"), 0
        else:
            print("bench: (a) the notebook way ...", flush=True)
            a_s, a_mib, a_log = measured([sys.executable, "-m", "bench.notebook"], clone)
            print(a_log, end="")
        print("bench: (b) dvc repro -f ...", flush=True)
        b_s, b_mib, b_log = measured([dvc, "repro", "-f"], clone)
        noop_s, _, _ = measured([dvc, "repro"], clone)
        params = load_raw(clone / "params.yaml")
        first = next(iter(params["archs"]))
        params["archs"][first]["hidden"] = [h + 8 for h in params["archs"][first]["hidden"]]
        (clone / "params.yaml").write_text(dump_raw(params))
        one_s, _, _ = measured([dvc, "repro"], clone)

    print("\nper-stage wall time of (b):")
    for name, seconds in stage_times(b_log, b_s):
        print(f"  {name:<20} {seconds:6.1f} s")
    print(f"\n(a) notebook way        {a_s:7.1f} s   peak {a_mib:5d} MiB")
    print(f"(b) dvc repro -f        {b_s:7.1f} s   peak {b_mib:5d} MiB (largest single stage process)")
    print(f"ratio a/b               {a_s / b_s:7.2f}   (>= 2.0 is the target)")
    print(f"no-op dvc repro         {noop_s:7.1f} s")
    print(f"one-arch change ({first}) {one_s:7.1f} s   ({one_s / b_s:.0%} of a full run)")


if __name__ == "__main__":
    run(main, usage=USAGE)
