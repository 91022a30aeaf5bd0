"""`make bench`: the notebook way against this pipeline, on the same machine, in one run.

Prints, each from this one run:
- (a) the notebook way, against (b) `dvc repro -f` (one stage at a time, as `make repro JOBS=1`) and (c) every
  stage forced through scripts/lanes.py on all cores (as `make repro`): wall times, peak memory, ratios;
- the critical path: download, split, the longest arch chain and the report, from (b)'s per-stage times: the
  wall time on a machine with one core per arch;
- the ceiling of lanes here: two single-thread trainings of the costliest arch at once against one after the
  other;
- the evidence's range tests, forced, on one lane and on all: their speed-up set against that ceiling;
- a no-op `dvc repro` and `make repro`, and a one-arch change.
The pipeline runs in a temporary clone of this repo (with data/raw copied in), so the workspace is left as it was.
Figures from one run on a possibly busy machine: compare ratios, not seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.workers import mnist_copy
from scripts.lanes import RUNNING, estimated_costs
from stages.ground.errors import StageError
from stages.plumbing.cli import refuse, run
from stages.plumbing.params import dump_raw, load_raw
from stages.plumbing.paths import RAW_DIR, timing_json

USAGE = "usage: python -m bench.run [--pipeline-only]"

# Runs a command and reports the peak RSS of its process tree (children it waited for).
MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('peak_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def measured(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """(seconds, peak MiB, stdout) of ``cmd``; per-stage lines are timestamped as they stream."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", MEASURE, *cmd], cwd=cwd, text=True, encoding="utf-8",
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


def critical_path(times: dict[str, float], archs: list[str]) -> tuple[float, str]:
    """Seconds of the longest chain of stages, and its arch: what one core per arch cannot beat."""
    chain = {arch: sum(times.get(f"{stage}@{arch}", 0.0) for stage in ("lr_range", "train", "evaluate"))
             for arch in archs}
    longest = max(chain, key=chain.get)
    return sum(times.get(stage, 0.0) for stage in ("download", "split", "report")) + chain[longest], longest


def ceiling(clones: list[Path], arch: str) -> tuple[float, float]:
    """Seconds of one training of ``arch`` per clone, one after the other and then all at once (`python -m
    stages.train`, outside DVC, so only the training processes compete)."""
    cmd = [sys.executable, "-m", "stages.train", arch]
    started = time.perf_counter()
    for clone in clones:
        subprocess.run(cmd, cwd=clone, check=True, capture_output=True)
    serial = time.perf_counter() - started
    started = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=clone, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for clone in clones]
    if any(proc.wait() != 0 for proc in procs):
        raise StageError(f"{' '.join(cmd)} failed in a bench clone")
    return serial, time.perf_counter() - started


def evidence_range_tests(clone: Path, jobs: int) -> float:
    """Seconds to rerun every evidence range test (forced: DVC would restore them from its cache) through lanes
    of ``jobs``."""
    seconds, _, _ = measured([sys.executable, "-m", "scripts.lanes", "-f", "-j", str(jobs), "evidence/dvc.yaml:range"],
                             clone)
    return seconds


def bench_clone(root: Path, tmp: Path) -> Path:
    """A clone of ``root`` in ``tmp`` with its results and MNIST, the data already downloaded: its download stage
    copies and verifies a local copy instead of going to the network, which would time the network."""
    local = mnist_copy(tmp)
    clone = tmp / "project"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    shutil.copytree(RAW_DIR, clone / RAW_DIR)
    params = load_raw(clone / "params.yaml")
    params["data"]["sources"].insert(0, {"local": str(local)})
    (clone / "params.yaml").write_text(dump_raw(params), encoding="utf-8")
    return clone


def one_arch_change(clone: Path, dvc: str) -> tuple[str, float]:
    """The first arch widened by 8 units per layer, and the seconds `dvc repro` then takes."""
    params = load_raw(clone / "params.yaml")
    first = next(iter(params["archs"]))
    params["archs"][first]["hidden"] = [h + 8 for h in params["archs"][first]["hidden"]]
    (clone / "params.yaml").write_text(dump_raw(params), encoding="utf-8")
    seconds, _, _ = measured([dvc, "repro"], clone)
    return first, seconds


def main(argv: list[str]) -> None:
    if argv not in ([], ["--pipeline-only"]):
        raise refuse(USAGE, argv)
    root = Path.cwd()
    dvc = str(Path(sys.executable).parent / "dvc")
    cores = len(os.sched_getaffinity(0))
    lanes = [sys.executable, "-m", "scripts.lanes", "-j", str(cores)]
    with tempfile.TemporaryDirectory(prefix="bench.") as tmp:
        clone = bench_clone(root, Path(tmp))
        archs = list(load_raw(clone / "params.yaml")["archs"])
        lanes_costs = estimated_costs([f"train@{arch}" for arch in archs],
                                      {f"train@{arch}": [clone / timing_json(arch, "train")] for arch in archs})

        if argv == ["--pipeline-only"]:  # for trying a change: the pipeline alone
            a_s, a_mib = float("nan"), 0
        else:
            print("bench: (a) the notebook way ...", flush=True)
            a_s, a_mib, a_log = measured([sys.executable, "-m", "bench.notebook"], clone)
            print(a_log, end="")
        print("bench: (b) dvc repro -f ...", flush=True)
        b_s, b_mib, b_log = measured([dvc, "repro", "-f"], clone)
        times = dict(stage_times(b_log, b_s))
        print(f"bench: (c) every stage forced, {cores} lanes ...", flush=True)
        c_s, c_mib, _ = measured([*lanes, "-f"], clone)
        noop_s, _, _ = measured([dvc, "repro"], clone)
        noop_lanes_s, _, _ = measured(lanes, clone)  # asks DVC, then records the files' status
        noop_fast_s, _, _ = measured(lanes, clone)  # answered from that record (scripts/up_to_date.py)

        print("bench: the ceiling, and the evidence's range tests ...", flush=True)
        others = [clone, *(Path(tmp) / f"project-{i}" for i in range(1, cores))]
        for other in others[1:]:
            shutil.copytree(clone, other, symlinks=True)
        costliest = max(archs, key=lambda arch: lanes_costs.get(f"train@{arch}", 0.0))
        serial_s, together_s = ceiling(others, costliest)
        range_1_s = evidence_range_tests(clone, 1)
        range_n_s = evidence_range_tests(clone, cores)

        first, one_s = one_arch_change(clone, dvc)

    path_s, path_arch = critical_path(times, archs)
    limit = serial_s / together_s
    print("\nper-stage wall time of (b):")
    for name, seconds in times.items():
        print(f"  {name:<20} {seconds:6.1f} s")
    print(f"\n(a) notebook way                {a_s:7.1f} s   peak {a_mib:5d} MiB")
    print(f"(b) dvc repro -f (JOBS=1)       {b_s:7.1f} s   peak {b_mib:5d} MiB (largest single stage process)   "
          f"ratio a/b {a_s / b_s:.2f}")
    print(f"(c) forced on {cores} lanes (JOBS={cores}) {c_s:7.1f} s   peak {c_mib:5d} MiB (largest single stage "
          f"process)   ratio a/c {a_s / c_s:.2f}")
    print(f"critical path (one core per arch) {path_s:5.1f} s   download, split, {path_arch}'s chain, report   "
          f"ratio a/path {a_s / path_s:.2f}")
    print(f"ceiling: {cores} trainings of {costliest} one after the other {serial_s:.1f} s, at once "
          f"{together_s:.1f} s: {limit:.2f}x the throughput")
    print(f"evidence range tests: 1 lane {range_1_s:.1f} s, {cores} lanes {range_n_s:.1f} s: "
          f"{range_1_s / range_n_s:.2f}x, {range_1_s / range_n_s / limit:.0%} of the ceiling")
    print(f"no-op: dvc repro {noop_s:.1f} s, lanes {noop_lanes_s:.1f} s the first time, {noop_fast_s:.2f} s after "
          "(python -m bench.noop: make repro's own)")
    print(f"one-arch change ({first}): dvc repro {one_s:.1f} s ({one_s / b_s:.0%} of a full run)")


if __name__ == "__main__":
    run(main, usage=USAGE)
