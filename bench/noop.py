"""`python -m bench.noop`: how long a `make repro` with nothing to do takes, and where the time goes.

Runs in this workspace, which must be up to date: DVC's own no-op (`dvc repro`), lanes' first no-op (it asks
DVC, then records the files' status), lanes' later ones (answered from that record, without DVC) and the whole
`make repro` (make, finding the venv's Python, lanes). Each ``ROUNDS`` times; prints the median and the load.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scripts import up_to_date
from stages.ground.errors import StageError
from stages.plumbing.cli import refuse, run

ROUNDS = 5
LANES = [sys.executable, "-m", "scripts.lanes"]
ANSWERED_WITHOUT_DVC = "(Nothing changed since DVC last said so.)"


def seconds(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise StageError(f"{' '.join(cmd)} failed: {(done.stdout + done.stderr).strip()[-300:]}")
    return took, done.stdout


def median_of(cmd: list[str], expect: str | None = None) -> float:
    times = []
    for _ in range(ROUNDS):
        took, output = seconds(cmd)
        if expect is not None and expect not in output:
            raise StageError(f"{' '.join(cmd)} did not answer as expected ({expect!r}): {output.strip()[-300:]}")
        times.append(took)
    return statistics.median(times)


def main(argv: list[str]) -> None:
    if argv:
        raise refuse("usage: python -m bench.noop", argv, "no arguments; run it in an up-to-date workspace")
    dvc = str(Path(sys.executable).parent / "dvc")
    load_before = os.getloadavg()[0]
    dvc_s = median_of([dvc, "repro"], expect="Data and pipelines are up to date.")
    up_to_date.STAMP.unlink(missing_ok=True)
    first_s, output = seconds(LANES)
    if "up to date" not in output:
        raise StageError(f"the workspace is not up to date (lanes ran stages): {output.strip()[-300:]}")
    lanes_s = median_of(LANES, expect=ANSWERED_WITHOUT_DVC)
    make_s = median_of(["make", "repro"], expect=ANSWERED_WITHOUT_DVC)
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f}; {ROUNDS} rounds each")
    print(f"dvc repro (DVC reads both pipelines)           {dvc_s:5.2f} s")
    print(f"lanes, first no-op (asks DVC, records)         {first_s:5.2f} s")
    print(f"lanes, later no-ops (answered without DVC)     {lanes_s:5.2f} s")
    print(f"make repro, later no-ops (make, venv, lanes)   {make_s:5.2f} s")


if __name__ == "__main__":
    run(main)
