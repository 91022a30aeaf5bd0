"""`python -m bench.slurm`: the quick study through SLURM (`make slurm WORKERS=2`, one CPU each, then the
aggregator) against `make repro` on this machine, in one run; prints both wall times, the ratio, and what SLURM
adds: submit to the first task's start, and the last task's end to the aggregator's start.

Needs a SLURM cluster that `sbatch` reaches from here (SLURM_CONF set if it needs it), whose node is this machine,
for the comparison to mean anything. Each side is a fresh clone with no dvc.lock, as after a change of params that
touches every stage (MNIST copied in as a local source, so the network is not timed); the SLURM side's clone
commits that and a folder remote, as a team would. Times are seen from here, polling squeue every POLL_S.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.workers import fresh_clone, mnist_copy
from scripts.slurm import LOGS
from stages.ground.errors import StageError
from stages.plumbing.cli import refuse, run

USAGE = "usage: python -m bench.slurm"
POLL_S = 0.1
JOB_TIMEOUT_S = 4 * 3600  # the quick study on one CPU takes minutes
JOB_IDS = re.compile(r"slurm: (?:workers|aggregator): job (\d+)")


def clone(root: Path, dest: Path, mnist: Path, remote: Path) -> Path:
    """A fresh clone that uses this project's venv: its locks keep their times, or make would remake that venv."""
    fresh_clone(root, dest, mnist, remote)
    for lock in (dest / "requirements").glob("*.txt"):
        source = (root / "requirements" / lock.name).stat()
        os.utime(lock, ns=(source.st_atime_ns, source.st_mtime_ns))
    return dest


def make(folder: Path, venv: Path, *args: str) -> str:
    done = subprocess.run(["make", "-s", f"VENV={venv}", *args], cwd=folder, capture_output=True, text=True,
                          encoding="utf-8", errors="backslashreplace")
    if done.returncode != 0:
        print(done.stdout + done.stderr)
        raise StageError(f"make {' '.join(args)} failed in {folder} (its output is above)")
    return done.stdout


def states(jobs: list[str]) -> dict[str, str]:
    """squeue's state of each of ``jobs``' tasks it still has ("123_0" for an array's task)."""
    done = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(jobs), "-o", "%i %T"], capture_output=True,
                          text=True, encoding="utf-8", timeout=60)
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def watch(jobs: list[str], started: float) -> tuple[dict[str, float], dict[str, float]]:
    """Poll until every task of ``jobs`` has left the queue: when each was first seen running and seen gone,
    in seconds since ``started``."""
    running: dict[str, float] = {}
    ended: dict[str, float] = {}
    seen: set[str] = set()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        now = time.monotonic() - started
        current = states(jobs)
        seen |= set(current)
        for job, state in current.items():
            if state in ("RUNNING", "COMPLETING") and job not in running:
                running[job] = now
        for job in seen - set(current) - set(ended):
            ended[job] = now
            running.setdefault(job, now)  # ran between two polls
        if not current:
            return running, ended
        if time.monotonic() > deadline:
            raise StageError(f"jobs {', '.join(jobs)} still queued after {JOB_TIMEOUT_S} s: see `squeue`")
        time.sleep(POLL_S)


def main(argv: list[str]) -> None:
    if argv:
        raise refuse(USAGE, argv)
    if shutil.which("sbatch") is None:
        raise StageError("sbatch not found: run this where SLURM jobs are submitted, on the node they run on")
    root = Path.cwd()
    venv = root / os.environ.get("VENV", ".venv")
    with tempfile.TemporaryDirectory(prefix="bench.") as tmp:
        base = Path(tmp)
        mnist = mnist_copy(base)
        alone = clone(root, base / "repro", mnist, base / "unused-remote")
        print("bench.slurm: make repro ...", flush=True)
        started = time.monotonic()
        make(alone, venv, "repro")
        repro_s = time.monotonic() - started

        team = clone(root, base / "slurm", mnist, base / "remote")
        # The workers clone HEAD; a committer of its own, as the clone may have no identity configured.
        if subprocess.run(["git", "-c", "user.name=bench.slurm", "-c", "user.email=bench.slurm@example.invalid",
                           "commit", "-qam", "bench.slurm: every stage to make, a folder remote"], cwd=team).returncode:
            raise StageError(f"git commit failed in {team} (its output is above)")
        print("bench.slurm: make slurm WORKERS=2 ...", flush=True)
        started = time.monotonic()
        array, aggregator = JOB_IDS.findall(make(team, venv, "slurm", "WORKERS=2"))
        tasks = [f"{array}_0", f"{array}_1"]
        running, ended = watch([array, aggregator], started)
        slurm_s = time.monotonic() - started
        aggregated = team / LOGS / f"{aggregator}.exit"
        if not aggregated.is_file() or aggregated.read_text(encoding="utf-8").strip() != "0":
            print(make(team, venv, "slurm-status", f"JOB={array}"))
            raise StageError(f"the SLURM run did not finish (status above; logs in {team / LOGS})")
        first_start = min(running[task] for task in tasks)
        last_end = max(ended[task] for task in tasks)

    print()
    row(f"make repro (JOBS={len(os.sched_getaffinity(0))})", repro_s)
    row("make slurm WORKERS=2, then the aggregator", slurm_s, f"ratio {repro_s / slurm_s:.2f}")
    row("  submit to the first task's start", first_start)
    for task in tasks:
        row(f"  task {task} (its clone included)", ended[task] - running[task])
    row("  last task's end to the aggregator's start", running[aggregator] - last_end)
    row("  aggregator", ended[aggregator] - running[aggregator])


def row(label: str, seconds: float, note: str = "") -> None:
    print(f"{label:<46}{seconds:8.1f} s   {note}".rstrip())


if __name__ == "__main__":
    run(main, usage=USAGE)
