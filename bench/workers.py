"""`python -m bench.workers`: one worker against two on the same stages, on this machine, in one run.

Each worker is a fresh clone with an empty DVC cache and no dvc.lock, so every stage of the quick study is to be
made (MNIST copied in as a local source, so the network is not timed), and a folder remote of its own run: one
worker does `--shard 0/1` on one lane; then two workers do `--shard 0/2` and `--shard 1/2` at once, one lane
each; then an aggregator, a clone with an empty cache, restores everything from the two workers' remote and
makes the report. Prints each wall time and the ratio. On a machine of two cores the two workers share them, as
two machines would not: it shows what splitting costs and gains, not what a second machine gives.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.lanes import DVC, RUNNING
from stages.ground.errors import StageError
from stages.plumbing.cli import refuse, run
from stages.plumbing.params import dump_raw, load_params, load_raw
from stages.plumbing.paths import RAW_DIR

USAGE = "usage: python -m bench.workers"
RESTORED = re.compile(r"Stage '([^']+)' is cached - skipping run")


def mnist_copy(folder: Path) -> Path:
    """A copy of this workspace's data/raw as ``folder``/mnist, for clones to take as a local source (the network
    is not timed)."""
    if not all((RAW_DIR / name).is_file() for name in load_params().data.sha256):
        raise StageError(f"MNIST is not in {RAW_DIR}/: run `dvc repro download` first")
    mnist = folder / "mnist"
    shutil.copytree(RAW_DIR, mnist)
    return mnist


def fresh_clone(root: Path, dest: Path, mnist: Path, remote: Path) -> Path:
    """A clone whose results are yet to be made, as after a change of params that touches every stage: no
    dvc.lock (its committed results would be current, or come from the remote of whoever committed them).

    Args:
        root: the project to clone.
        dest: where the clone goes.
        mnist: a folder holding MNIST's four IDX files, put first among the clone's data sources.
        remote: a folder, the clone's default DVC remote.
    """
    subprocess.run(["git", "clone", "-q", str(root), str(dest)], check=True)
    (dest / "dvc.lock").unlink()
    params = load_raw(dest / "params.yaml")
    params["data"]["sources"].insert(0, {"local": str(mnist)})
    (dest / "params.yaml").write_text(dump_raw(params), encoding="utf-8")
    subprocess.run([*DVC, "remote", "add", "-q", "-d", "bench", str(remote)], cwd=dest, check=True)
    # the workers refuse a remote that does not verify what it downloads
    subprocess.run([*DVC, "remote", "modify", "bench", "verify", "true"], cwd=dest, check=True)
    return dest


def timed(commands: list[tuple[list[str], Path]]) -> tuple[float, str]:
    """Wall seconds until every command, all started at once, has finished; and their output."""
    started = time.perf_counter()
    procs = [(subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               encoding="utf-8"), cmd)
             for cmd, cwd in commands]
    outputs = []
    for proc, cmd in procs:
        output, _ = proc.communicate()
        if proc.returncode != 0:
            print(output, file=sys.stderr)
            raise StageError(f"{' '.join(cmd)} failed (its output is above)")
        outputs.append(output)
    return time.perf_counter() - started, "".join(outputs)


def main(argv: list[str]) -> None:
    if argv:
        raise refuse(USAGE, argv)
    root = Path.cwd()
    worker = [sys.executable, "-m", "scripts.worker", "-j", "1"]
    with tempfile.TemporaryDirectory(prefix="bench.") as tmp:
        base = Path(tmp)
        mnist = mnist_copy(base)
        alone = fresh_clone(root, base / "alone", mnist, base / "remote-alone")
        print("bench.workers: one worker ...", flush=True)
        one_s, _ = timed([([*worker, "--shard", "0/1"], alone)])
        pair = [fresh_clone(root, base / f"worker-{i}", mnist, base / "remote-pair") for i in range(2)]
        print("bench.workers: two workers at once ...", flush=True)
        two_s, _ = timed([([*worker, "--shard", f"{i}/2"], clone) for i, clone in enumerate(pair)])
        aggregator = fresh_clone(root, base / "aggregator", mnist, base / "remote-pair")
        print("bench.workers: the aggregator ...", flush=True)
        aggregate_s, aggregated = timed([([sys.executable, "-m", "scripts.worker", "--aggregate"], aggregator)])
    print(f"\none worker (--shard 0/1, 1 lane)       {one_s:7.1f} s")
    print(f"two workers at once (0/2 and 1/2)      {two_s:7.1f} s   ratio {one_s / two_s:.2f}")
    restored = RESTORED.findall(aggregated)
    print(f"aggregator                             {aggregate_s:7.1f} s   restored {len(restored)} stages, "
          f"ran {', '.join(RUNNING.findall(aggregated)) or 'nothing'}")


if __name__ == "__main__":
    run(main, usage=USAGE)
