"""`make slurm WORKERS=N [PIPELINE=evidence/dvc.yaml] [CPUS=C] [ONLY=I,J]`: the workers of scripts/worker.py as a
SLURM job array, task i running `make worker SHARD=i/N`, then `make aggregate` in this folder once every task has
succeeded (`--dependency=afterok`). `make slurm-status [JOB=<array id>]`: how each share ended, and the one command
that reruns only the shares that failed (ONLY=...; the others' results are on the remote already).

Each task runs deploy/slurm/task.sbatch: a fresh clone of this folder's HEAD in its node's scratch space (tasks
that shared one project folder would make its shared stages at once), this project's venv, and the exit status
written beside the logs in slurm-logs/ (git-ignored), where slurm-status reads it.

Usage: python -m scripts.slurm --workers N [--pipeline FILE] [--cpus C] [--only I,J] [--venv DIR]
       python -m scripts.slurm --status [ARRAY_ID]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from scripts.worker import MAX_SHARDS, PIPELINES, default_remote
from stages.ground.errors import StageError, UsageError
from stages.plumbing.cli import ArgumentParser, run

USAGE = ("usage: python -m scripts.slurm --workers N [--pipeline FILE] [--cpus C] [--only I,J] [--venv DIR]\n"
         "       python -m scripts.slurm --status [ARRAY_ID]")
LOGS = Path("slurm-logs")
TASK = Path("deploy/slurm/task.sbatch")
JOB_NAME = "mnist-lr"
MAX_CPUS = 256  # per worker: more cores than a node has
JOB_ID = re.compile(r"\d{1,20}")
SLURM_TIMEOUT_S = 120  # one sbatch or squeue call: a busy controller answers in seconds
SBATCH_MISSING = "sbatch not found: run `make slurm` where SLURM jobs are submitted (a cluster's login node)"


def worker_command(index_variable: str, shards: int, pipeline: str, jobs: int) -> str:
    """One worker's shell command, its shard's index read from the environment variable ``index_variable`` when it
    runs. The SLURM array and the Kubernetes Job (deploy/k8s/worker-job.yaml) both run this; every part is a
    number, a name of ours or one of PIPELINES, so no user text reaches the shell."""
    return f"make worker SHARD=${index_variable}/{shards} PIPELINE={pipeline} JOBS={jobs}"


def aggregate_command(pipeline: str) -> str:
    return f"make aggregate PIPELINE={pipeline}"


# --- pure: arguments and sbatch lines ---------------------------------------------------------------------


def bounded_int(name: str, low: int, high: int, example: str):
    def parse(text: str) -> int:
        if not (len(text) <= 20 and text.isascii() and text.isdigit() and low <= int(text) <= high):
            raise UsageError(f"{name} takes a whole number from {low} to {high:,} (got {text[:20]!r}): for example "
                             f"`{example}`")
        return int(text)
    return parse


def share_list(text: str) -> list[int]:
    parts = text[:10_000].split(",")
    if len(text) > 10_000 or not all(p.isascii() and p.isdigit() and len(p) <= 20 for p in parts):
        raise UsageError(f"ONLY takes share numbers separated by commas (got {text[:40]!r}): for example "
                         "`make slurm WORKERS=4 ONLY=1,3`")
    return sorted({int(p) for p in parts})


def pipeline(text: str) -> str:
    if text not in PIPELINES:
        raise UsageError(f"PIPELINE takes {' or '.join(PIPELINES)} (got {text[:40]!r}): for example "
                         f"`make slurm WORKERS=4 PIPELINE={PIPELINES[1]}`")
    return text


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(USAGE.splitlines()[0])
    parser.add_argument("--workers", type=bounded_int("WORKERS", 1, MAX_SHARDS, "make slurm WORKERS=4"))
    parser.add_argument("--pipeline", default=PIPELINES[0], type=pipeline)
    parser.add_argument("--cpus", type=bounded_int("CPUS", 1, MAX_CPUS, "make slurm WORKERS=4 CPUS=2"), default=1)
    parser.add_argument("--only", type=share_list)
    parser.add_argument("--venv", default=".venv")
    parser.add_argument("--status", nargs="?", const="", default=None)
    args = argparse.Namespace(**parser.parse(argv))
    if args.status is not None:
        if args.workers is not None or args.only is not None:
            raise UsageError("--status takes no --workers or --only: for example `make slurm-status JOB=12`")
        if args.status and not JOB_ID.fullmatch(args.status[:21]):
            raise UsageError(f"JOB takes the array's job id that `make slurm` printed (got {args.status[:40]!r}): for "
                             "example `make slurm-status JOB=12`")
        return args
    if args.workers is None:
        raise UsageError("WORKERS is missing: for example `make slurm WORKERS=4`")
    if args.only is not None and not all(i < args.workers for i in args.only):
        raise UsageError(f"ONLY takes shares from 0 to {args.workers - 1} of WORKERS={args.workers} (got "
                         f"{','.join(map(str, args.only))[:40]}): for example "
                         f"`make slurm WORKERS={args.workers} ONLY=0`")
    return args


@dataclass(frozen=True)
class Submission:
    """What `make slurm` submitted, recorded as slurm-logs/<array>.json for slurm-status."""
    array: str
    aggregator: str
    workers: int
    shares: list[int]
    pipeline: str
    cpus: int

    def rerun(self, shares: list[int]) -> str:
        """The `make slurm` line that reruns only ``shares`` (and the aggregator after them)."""
        extra = (f" PIPELINE={self.pipeline}" if self.pipeline != PIPELINES[0] else "") + \
                (f" CPUS={self.cpus}" if self.cpus != 1 else "")
        return f"make slurm WORKERS={self.workers} ONLY={','.join(map(str, shares))}{extra}"


def array_spec(shares: list[int]) -> str:
    """sbatch's --array for these shares: a range when they are all, in order."""
    if shares == list(range(len(shares))) and len(shares) > 1:
        return f"0-{len(shares) - 1}"
    return ",".join(map(str, shares))


def workers_argv(root: Path, venv: Path, workers: int, shares: list[int], pipeline: str, cpus: int) -> list[str]:
    """The sbatch command of the workers' job array.

    Args:
        root: the project; the tasks clone it and write their logs in its LOGS folder.
        venv: the virtual environment the tasks run make with.
        workers: N of `make worker SHARD=i/N`; ``shares``: the i to run (all, or those to rerun).
        pipeline: the dvc.yaml the workers run (one of PIPELINES).
        cpus: cores per task, and the worker's lanes.
    """
    logs = root / LOGS
    return ["sbatch", "--parsable", f"--job-name={JOB_NAME}-worker", f"--array={array_spec(shares)}",
            f"--cpus-per-task={cpus}", f"--output={logs}/%A_%a.out", f"--chdir={root}", str(root / TASK),
            str(logs), "clone", str(venv), worker_command("SLURM_ARRAY_TASK_ID", workers, pipeline, cpus)]


def aggregator_argv(root: Path, venv: Path, array: str, pipeline: str) -> list[str]:
    """The aggregator once every task of ``array`` has succeeded; cancelled by SLURM as soon as one fails
    (`--kill-on-invalid-dep`), instead of waiting for ever."""
    logs = root / LOGS
    return ["sbatch", "--parsable", f"--job-name={JOB_NAME}-aggregate", f"--dependency=afterok:{array}",
            "--kill-on-invalid-dep=yes", "--cpus-per-task=1", f"--output={logs}/%j.out", f"--chdir={root}",
            str(root / TASK), str(logs), "here", str(venv), aggregate_command(pipeline)]


def parsable_id(output: str) -> str | None:
    """The job id of `sbatch --parsable` (`<id>` or `<id>;<cluster>`)."""
    job = output.strip().partition(";")[0]
    return job if JOB_ID.fullmatch(job) else None


# --- submitting ------------------------------------------------------------------------------------------


def slurm(argv: list[str]) -> subprocess.CompletedProcess:
    if shutil.which(argv[0]) is None:
        raise StageError(SBATCH_MISSING.replace("sbatch", argv[0], 1))
    try:
        return subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", errors="backslashreplace",
                              timeout=SLURM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise StageError(f"{argv[0]} had not answered after {SLURM_TIMEOUT_S} s: is slurmctld up (`sinfo`)? Then "
                         "run the same command again") from None


def sbatch(argv: list[str], what: str) -> str:
    done = slurm(argv)
    job = parsable_id(done.stdout) if done.returncode == 0 else None
    if job is None:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise StageError(f"sbatch refused {what}: {said[-1] if said else f'exit {done.returncode}'}")
    return job


def uncommitted() -> list[str]:
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                          encoding="utf-8", errors="backslashreplace")
    if done.returncode != 0:
        raise StageError("this folder is no git clone: the workers clone it, so run `make slurm` in the project")
    return [line[3:] for line in done.stdout.splitlines()]


def submit(args: argparse.Namespace) -> None:
    root = Path.cwd()
    if shutil.which("sbatch") is None:
        raise StageError(SBATCH_MISSING)
    changed = uncommitted()
    if changed:
        raise StageError(f"the workers run a clone of HEAD, which lacks your changes to {', '.join(changed[:3])}"
                         f"{' …' if len(changed) > 3 else ''}: commit them (or `git stash`), then rerun")
    default_remote()  # no remote: one line now, not in every task's log
    (root / LOGS).mkdir(exist_ok=True)
    venv = (root / args.venv).resolve()
    shares = args.only if args.only is not None else list(range(args.workers))
    array = sbatch(workers_argv(root, venv, args.workers, shares, args.pipeline, args.cpus), "the workers")
    try:
        aggregator = sbatch(aggregator_argv(root, venv, array, args.pipeline), "the aggregator")
    except StageError as err:
        raise StageError(f"{err} (the workers are job {array}: once they have finished, run `make aggregate` "
                         f"here, or stop them with `scancel {array}`)") from None
    record = Submission(array, aggregator, args.workers, shares, args.pipeline, args.cpus)
    (root / LOGS / f"{array}.json").write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    command = worker_command("SLURM_ARRAY_TASK_ID", args.workers, args.pipeline, args.cpus)
    print(f"slurm: workers: job {array}, share{'s' * (len(shares) > 1)} {array_spec(shares)} of {args.workers}, "
          f"{args.cpus} CPU{'s' * (args.cpus > 1)} each: {command}")
    print(f"slurm: aggregator: job {aggregator}, once every share has succeeded: {aggregate_command(args.pipeline)}")
    print(f"slurm: logs: {LOGS}/{array}_<share>.out and {LOGS}/{aggregator}.out")
    print(f"slurm: watch: squeue -j {array},{aggregator} (sacct -j {array},{aggregator} once they end); "
          f"how each share ended, and what reruns the failed ones: make slurm-status JOB={array}")


# --- status ----------------------------------------------------------------------------------------------


def load_submission(job: str) -> Submission:
    records = sorted(LOGS.glob("*.json"), key=lambda path: path.stat().st_mtime)
    path = LOGS / f"{job}.json" if job else (records[-1] if records else None)
    if path is None or not path.is_file():
        raise StageError(f"no submission {job + ' ' if job else ''}in {LOGS}/: `make slurm WORKERS=N` submits one")
    try:
        return Submission(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as err:
        raise StageError(f"{path} is damaged ({err}): remove it; `make slurm` writes a new one") from None


def queued() -> dict[str, str]:
    """This user's jobs SLURM still knows, each array task on its own: job id -> state (and why it waits)."""
    done = slurm(["squeue", "--me", "-h", "-r", "-o", "%i|%T|%r"])
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise StageError(f"squeue failed: {said[-1] if said else f'exit {done.returncode}'}")
    states = {}
    for line in done.stdout.splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        states[job] = state.lower() + (f" ({reason})" if reason not in ("", "None") else "")
    return states


def exit_status(job: str) -> int | None:
    try:
        return int((LOGS / f"{job}.exit").read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def describe(record: Submission, states: dict[str, str]) -> tuple[list[str], list[int]]:
    """A line per share and for the aggregator; the shares to rerun."""
    lines, failed = [], []
    for i in record.shares:
        job = f"{record.array}_{i}"
        code = exit_status(job)
        if code == 0:
            state = "done"
        elif code is not None:
            state, failed = f"failed, exit {code} (its log: {LOGS}/{job}.out)", failed + [i]
        elif job in states:
            state = states[job]
        else:
            state = f"ended without an exit status: cancelled, out of time or its node lost ({LOGS}/{job}.out)"
            failed.append(i)
        lines.append(f"share {i}/{record.workers} (job {job}): {state}")
    code = exit_status(record.aggregator)
    if code is not None:
        state = "done: the results are in this folder" if code == 0 else \
            f"failed, exit {code} (its log: {LOGS}/{record.aggregator}.out); once fixed, `make aggregate` here"
    elif record.aggregator in states:
        state = states[record.aggregator]
    else:
        state = "did not run: a share failed" if failed else "ended without an exit status"
    lines.append(f"aggregate (job {record.aggregator}): {state}")
    return lines, failed


def status(job: str) -> None:
    record = load_submission(job)
    lines, failed = describe(record, queued())
    print("\n".join(lines))
    if failed:
        print(f"rerun only share{'s' * (len(failed) > 1)} {', '.join(map(str, failed))}, then aggregate: "
              f"{record.rerun(failed)}")


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    status(args.status) if args.status is not None else submit(args)


if __name__ == "__main__":
    run(main, usage=USAGE)
