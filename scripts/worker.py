"""`make worker SHARD=i/n` (or `STAGES='train@base wide3'`): this machine's share of the training, sent to the
team's DVC remote; `make aggregate`: everything back from that remote, nothing trained, and the reports made.

A worker (a clone of the same commit that reaches the default remote):
1. reproduces its share on every core (scripts/lanes.py), each stage with `dvc repro --pull -s`: one that
   another worker has already pushed is restored from the remote's run cache instead of trained;
2. pushes those stages' cached outputs (data, models) with `dvc push --with-deps`;
3. pushes their `cache: false` outputs (records, metrics, plots), which `dvc push` skips but a run-cache
   entry names;
4. pushes the run cache, last (`dvc push --run-cache`): no entry reaches the remote before the files it names.
DVC sends each file under a temporary name and renames it once whole (a folder remote: os.replace; SSH: an
SFTP rename), so a worker killed midway leaves no half file there; run again, it finishes the job.

A share: the training stages of the pipeline (`dvc.yaml`, or `evidence/dvc.yaml`), grouped by arch (an arch's
stages go together, with the stages they read; the long-budget rule check goes with evidence.long_rules.arch),
archs dealt to the shards longest first (by the timings this clone has: the evidence's are committed, the quick
study's are the last local run's), each to the least loaded. Stages that read every
arch (report, answer) are the aggregator's: it runs `dvc repro --pull`, which restores every training stage and
runs only those.

Usage: python -m scripts.worker [-j N] [--pipeline FILE] (--shard I/N | --stages 'STAGE_OR_ARCH ...')
       python -m scripts.worker --aggregate [--pipeline FILE]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from scripts import lanes
from stages.plumbing import paths
from stages.plumbing.cli import ArgumentParser, run
from stages.plumbing.errors import StageError, UsageError
from stages.plumbing.params import load_params

USAGE = ("usage: python -m scripts.worker [-j N] [--pipeline FILE] (--shard I/N | --stages 'STAGE_OR_ARCH ...')\n"
         "       python -m scripts.worker --aggregate [--pipeline FILE]")
USAGE_LINE = ("usage: python -m scripts.worker [-j N] [--pipeline FILE] (--shard I/N | --stages 'STAGE_OR_ARCH ...' | "
              "--aggregate)")  # in one line, as a refusal names it
PIPELINES = ("dvc.yaml", "evidence/dvc.yaml")
SHARD = re.compile(r"(\d+)/(\d+)")
NO_REMOTE = ("no default DVC remote: add the team's with `dvc remote add -d <name> <url>` and commit .dvc/config "
             "(docs/workers.md: Past one machine)")


# --- pure: who trains what --------------------------------------------------------------------------------


def arch_of(stage: str, archs: Iterable[str], long_rules_arch: str) -> str | None:
    """The arch a stage trains or reads the training of, None for a stage of every arch (or none): the quick
    study's `train@base`, the evidence's `range@base-1` (`<kind>@<arch>-<seed>`), `long_rules@<source>-<seed>`
    (paths.by_rate: evidence.long_rules.arch)."""
    pipeline, _, name = stage.rpartition(":")
    kind, _, item = name.partition("@")
    if not item:
        return None
    if pipeline:
        item = item.rpartition("-")[0]
        if paths.by_rate(kind):
            return long_rules_arch
    return item if item in set(archs) else None


def deal(costs: dict[str, float], shards: int) -> list[list[str]]:
    """The archs dealt to ``shards`` shards: costliest first, each to the least loaded (ties: the lower index)."""
    loads = [0.0] * shards
    dealt: list[list[str]] = [[] for _ in range(shards)]
    for arch in sorted(costs, key=lambda a: (-costs[a], a)):
        i = loads.index(min(loads))
        dealt[i].append(arch)
        loads[i] += costs[arch]
    return dealt


def share(stages: Iterable[str], archs_of_stage: dict[str, str | None], archs: set[str]) -> list[str]:
    """The stages of ``archs``, in the given order."""
    return [stage for stage in stages if archs_of_stage[stage] in archs]


MAX_SHARDS = 1_000  # far more machines than the evidence has stages to share (its ~170)


def parse_shard(text: str) -> tuple[int, int]:
    match = SHARD.fullmatch(text[:40])  # a longer text is no I/N anyone means: refused without parsing it
    if not match or len(text) > 40 or not int(match[1]) < int(match[2]) <= MAX_SHARDS:
        raise UsageError(f"--shard takes I/N with 0 <= I < N <= {MAX_SHARDS:,} (got {text[:40]!r}): for two "
                         "machines, `make worker SHARD=0/2` on one and `make worker SHARD=1/2` on the other")
    return int(match[1]), int(match[2])


def parse_pipeline(text: str) -> str:
    if text not in PIPELINES:
        raise UsageError(f"--pipeline takes one of {', '.join(PIPELINES)} (got {text!r})")
    return text


def parse_stages(text: str) -> list[str]:
    if not text.split():
        raise UsageError("--stages is empty: name stages (train@base) or archs (base)")
    return text.split()


def parse_args(argv: list[str]) -> dict:
    """jobs (passed to lanes as given), pipeline, shard (I, N), stages (stage or arch names) and aggregate, by name;
    exactly one of shard, stages and aggregate is given."""
    parser = ArgumentParser(USAGE_LINE)
    parser.add_argument("-j", dest="jobs")
    parser.add_argument("--pipeline", type=parse_pipeline, default=PIPELINES[0])
    parser.add_argument("--shard", type=parse_shard)
    parser.add_argument("--stages", type=parse_stages)
    parser.add_argument("--aggregate", action="store_true")
    args = parser.parse(argv)
    if sum(args[key] not in (None, False) for key in ("shard", "stages", "aggregate")) != 1:
        parser.error("give one of --shard, --stages, --aggregate")
    return args


# --- DVC -------------------------------------------------------------------------------------------------


def dvc(*args: str) -> None:
    """A dvc command of the venv's own dvc, its output passed through; a failure ends the worker."""
    if subprocess.run([*lanes.DVC, *args]).returncode != 0:
        raise StageError(f"`dvc {' '.join(args)}` failed (its output is above); fix that and run the worker again: "
                         "what it finished is kept")


def default_remote() -> str:
    done = subprocess.run([*lanes.DVC, "remote", "default"], capture_output=True, text=True,
                          encoding="utf-8")
    if done.returncode != 0 or not done.stdout.strip():
        raise StageError(NO_REMOTE)
    return done.stdout.strip()


def pipeline_stages(pipeline: str) -> dict[str, list[Path]]:
    """Every stage of ``pipeline`` as `dvc repro` names it, in DVC's order, with its timing records."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        return lanes.timing_files(repo.stage.collect(pipeline))


def chosen_stages(args: dict) -> list[str]:
    params = load_params()
    timings = pipeline_stages(args["pipeline"])
    stages = list(timings)
    names = params.networks
    by_arch = {stage: arch_of(stage, names, params.evidence.long_rules.arch) for stage in stages}
    if args["stages"] is not None:
        unknown = [s for s in args["stages"] if s not in stages and s not in names]
        if unknown:
            raise StageError(f"--stages: {', '.join(unknown)} is neither a stage of {args['pipeline']} nor an arch "
                             f"of params.yaml (archs and evidence.heldout: {', '.join(names)})")
        named = set(args["stages"])
        return [stage for stage in stages if stage in named or by_arch[stage] in named]
    index, shards = args["shard"]
    costs = lanes.estimated_costs(stages, timings)
    per_arch = {arch: sum(costs[s] for s in stages if by_arch[s] == arch) for arch in names}
    return share(stages, by_arch, set(deal(per_arch, shards)[index]))


def push_uncached(stages: list[str]) -> None:
    """Send the `cache: false` outputs of ``stages`` (and of the stages they read) to the default remote: `dvc
    push` skips them, and another machine restoring a stage from the run cache needs them. Each stage is first
    saved to the local run cache (which puts those files in the cache); the one that was not run here but is
    current by the committed dvc.lock gets its entry too."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    with Repo(".") as repo, repo.lock:
        todo = plan_repro(get_active_graph(repo.index.graph), collect_stages(repo, stages))
        hashes = []
        for stage in todo:
            if any(not out.use_cache for out in stage.outs) and not stage.changed():
                repo.stage_cache.save(stage)
                hashes += [out.hash_info for out in stage.outs if not out.use_cache and out.hash_info]
        failed = repo.cloud.push(hashes).failed
    if failed:
        raise StageError(f"{len(failed)} `cache: false` output(s) could not be pushed (DVC said why above); run the "
                         "worker again")


def work(args: dict) -> None:
    default_remote()
    stages = chosen_stages(args)
    if not stages:
        print(f"worker: shard {args['shard'][0]}/{args['shard'][1]} has no arch: nothing to do")
        return
    print(f"worker: {len(stages)} stages: {' '.join(stages)}", flush=True)
    jobs = ["-j", args["jobs"]] if args["jobs"] else []
    code = subprocess.run([sys.executable, "-m", "scripts.lanes", *jobs, "--pull", *stages]).returncode
    if code != 0:
        raise SystemExit(code)  # lanes said what failed, or what Ctrl-C stopped
    dvc("push", "--with-deps", *stages)
    push_uncached(stages)
    dvc("push", "--run-cache", "--with-deps", *stages)
    print(f"worker: done; {len(stages)} stages are on the remote")


def aggregate(args: dict) -> None:
    """`dvc repro --pull`, its output passed through; then which training stages it had to run itself."""
    default_remote()
    params = load_params()
    lanes.check_locks()
    lanes.make_plan([args["pipeline"]], force=False)  # refuses to start when DVC would delete a user's files
    proc = subprocess.Popen([*lanes.DVC, "repro", "--pull", args["pipeline"]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                            errors="backslashreplace")
    trained = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        trained += [stage for stage in lanes.RUNNING.findall(line)
                    if arch_of(stage, params.networks, params.evidence.long_rules.arch) is not None]
    if proc.wait() != 0:
        raise StageError(f"`dvc repro --pull {args['pipeline']}` failed (its output is above)")
    if trained:
        print(f"aggregate: ran {', '.join(trained)} itself: neither a worker nor the remote had their results for "
              "this commit (workers push what they make; results committed in dvc.lock come from the `dvc push` of "
              "whoever committed them)")


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    aggregate(args) if args["aggregate"] else work(args)


if __name__ == "__main__":
    run(main, usage=USAGE)
