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

import hashlib
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from ruamel.yaml import YAML

from scripts import lanes
from stages.ground.errors import StageError, UsageError
from stages.plumbing import paths
from stages.plumbing.cli import ArgumentParser, run
from stages.plumbing.params import load_params

USAGE = ("usage: python -m scripts.worker [-j N] [--pipeline FILE] (--shard I/N | --stages 'STAGE_OR_ARCH ...')\n"
         "       python -m scripts.worker --aggregate [--pipeline FILE]")
USAGE_LINE = ("usage: python -m scripts.worker [-j N] [--pipeline FILE] (--shard I/N | --stages 'STAGE_OR_ARCH ...' | "
              "--aggregate)")  # in one line, as a refusal names it
PIPELINES = ("dvc.yaml", "evidence/dvc.yaml")
SHARD = re.compile(r"(\d+)/(\d+)")
NO_REMOTE = ("no default DVC remote: add the team's with `dvc remote add -d <name> <url>` and commit .dvc/config "
             "(docs/workers.md: Past one machine)")
# DVC uploads a file under a temporary name and renames it once whole: an upload cut short (a full remote, a lost
# connection) leaves that temporary file on the remote.
CUT_SHORT = ("a push cut short may leave partial .tmp files on the remote: `make prune-remote` removes those older "
             "than a day")
UNABLE_TO_PULL = re.compile(r"Unable to pull data for stage: '([^']+)'")  # how `dvc repro --pull` says it
FROM_RUN_CACHE = re.compile(r"Stage '([^']+)' is cached - skipping run")  # and that it restores from the run cache


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
                         "what it finished is kept" + (f"; {CUT_SHORT}" if args[0] == "push" else ""))


def default_remote() -> str:
    """The default remote's name, once it is known to verify what it downloads: without `verify`, DVC takes an
    object whose bytes were damaged on the remote as it is, and a damaged model reaches the workspace."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        name = repo.config["core"].get("remote")
        verify = repo.config["remote"].get(name, {}).get("verify") if name else None
    if not name:
        raise StageError(NO_REMOTE)
    if verify is not True:
        raise StageError(f"the default DVC remote {name!r} does not verify what it downloads, so a damaged object "
                         f"on it would reach the workspace: `dvc remote modify {name} verify true`, then commit "
                         ".dvc/config (docs/workers.md: Past one machine)")
    return name


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
                         f"worker again; {CUT_SHORT}")


def lanes_to_the_end(argv: list[str]) -> int:
    """Lanes' exit code. A Ctrl-C or SIGTERM that reaches this process is passed on to lanes (one sent to the whole
    group reaches it too; it takes the second as nothing new) and lanes waited for, while it stops the stages and
    says so: subprocess.run would kill it, and its dvc processes would go on running."""
    proc = subprocess.Popen([sys.executable, "-m", "scripts.lanes", *argv])
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)


def work(args: dict) -> None:
    default_remote()
    stages = chosen_stages(args)
    if not stages:
        print(f"worker: shard {args['shard'][0]}/{args['shard'][1]} has no arch: nothing to do")
        return
    print(f"worker: {len(stages)} stages: {' '.join(stages)}", flush=True)
    jobs = ["-j", args["jobs"]] if args["jobs"] else []
    code = lanes_to_the_end([*jobs, "--pull", *stages])
    if code != 0:
        raise SystemExit(code)  # lanes said what failed, or what Ctrl-C stopped
    dvc("push", "--with-deps", *stages)
    push_uncached(stages)
    dvc("push", "--run-cache", "--with-deps", *stages)
    print(f"worker: done; {len(stages)} stages are on the remote")


def recorded_outputs(pipeline: str) -> dict[str, dict[str, str]]:
    """Each stage's outputs as its pipeline's lock records them: path and hash, by the stage's name as `dvc repro`
    gives it (an evidence stage with its pipeline's prefix)."""
    lock = Path(pipeline).with_suffix(".lock")
    prefix = "" if pipeline == PIPELINES[0] else f"{pipeline}:"
    entries = (YAML(typ="safe").load(lock) or {}).get("stages", {}) if lock.is_file() else {}
    return {f"{prefix}{stage}": {out["path"]: out["md5"] for out in entry.get("outs") or [] if "md5" in out}
            for stage, entry in entries.items()}


def run_cache_outputs(stages: list[str]) -> set[tuple[str, str]]:
    """The outputs (path, hash) that the default remote's run-cache entries for ``stages``, as they are now (the
    deps this run saw), record: what a worker that ran them pushed, and `dvc repro --pull` could not restore."""
    from dvc.repo import Repo
    from dvc.stage.cache import _can_hash, _get_stage_hash

    outputs: set[tuple[str, str]] = set()
    if not stages:
        return outputs
    with Repo(".") as repo:
        remote = repo.cloud.get_remote()
        for stage in repo.index.stages:
            if stage.addressing not in stages or not _can_hash(stage):
                continue
            key = _get_stage_hash(stage)
            folder = remote.fs.join(remote.path, "runs", key[:2], key)
            for entry in remote.fs.ls(folder, detail=False) if remote.fs.exists(folder) else []:
                with remote.fs.open(entry, "r", encoding="utf-8") as f:
                    record = YAML(typ="safe").load(f.read(MAX_RUN_ENTRY_CHARS)) or {}
                outputs |= {(out["path"], out["md5"]) for out in record.get("outs") or []
                            if isinstance(out, dict) and {"path", "md5"} <= set(out)}
    return outputs


MAX_RUN_ENTRY_CHARS = 2**20  # one stage's run-cache entry: its deps and outs, a few KB


def damaged_on_remote(outputs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(output, object's path on the remote) for each of ``outputs`` (path, hash), or file of a folder output, whose
    object the default remote holds with bytes that no longer match its hash. Read on the remote, not pulled; a
    missing object is no damage."""
    from dvc.repo import Repo

    damaged: list[tuple[str, str]] = []
    if not outputs:
        return damaged
    with Repo(".") as repo:
        odb = repo.cloud.get_remote_odb()
        for output, oid in sorted(set(outputs)):
            intact, manifest = _remote_object(odb, oid, keep=oid.endswith(".dir"))
            if intact is False:
                damaged.append((output, odb.oid_to_path(oid)))
            elif intact and oid.endswith(".dir"):
                damaged += [(f"{output}/{entry['relpath']}", odb.oid_to_path(entry["md5"]))
                            for entry in json.loads(manifest) if _remote_object(odb, entry["md5"])[0] is False]
    return damaged


def _remote_object(odb, oid: str, keep: bool = False) -> tuple[bool | None, bytes]:
    """Whether an object on the remote hashes to its name (None: the remote does not have it), and its bytes if
    ``keep`` (a folder's list of files). Read in chunks: a data file may be large."""
    digest, kept = hashlib.md5(), []
    try:
        with odb.fs.open(odb.oid_to_path(oid), "rb") as f:
            for chunk in iter(lambda: f.read(2**20), b""):
                digest.update(chunk)
                if keep:
                    kept.append(chunk)
    except FileNotFoundError:
        return None, b""
    return digest.hexdigest() == oid.removesuffix(".dir"), b"".join(kept)


def aggregate(args: dict) -> None:
    """`dvc repro --pull`, its output passed through; then which training stages it had to run itself, and why
    when the remote's copy of their results is damaged."""
    default_remote()
    lanes.preflight([args["pipeline"]])  # as lanes checks before it starts DVC
    params = load_params()
    recorded = recorded_outputs(args["pipeline"])  # before this run records its own
    proc = subprocess.Popen([*lanes.DVC, "repro", "--pull", args["pipeline"]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                            errors="backslashreplace")
    ran, unpulled, restoring = [], [], []
    for line in proc.stdout:
        print(line, end="", flush=True)
        ran += lanes.RUNNING.findall(line)
        unpulled += UNABLE_TO_PULL.findall(line)
        restoring += FROM_RUN_CACHE.findall(line)
    failed = proc.wait() != 0
    trained = [stage for stage in ran if arch_of(stage, params.networks, params.evidence.long_rules.arch) is not None]
    # what it could not pull, by the lock's record or by the remote's run cache (and a failed restore ends the run)
    damaged = damaged_on_remote([*((path, oid) for stage in unpulled for path, oid in recorded.get(stage, {}).items()),
                                 *run_cache_outputs(ran + (restoring[-1:] if failed else []))])
    if damaged:
        objects = ", ".join(f"{where} ({output})" for output, where in damaged[:5]) + (
            f" and {len(damaged) - 5} more" if len(damaged) > 5 else "")
        kept_out = ("`dvc repro --pull` stopped (its output is above) and kept the damage out of the workspace"
                    if failed else "this run made those outputs anew here, so the damage stayed out of the workspace")
        raise StageError(f"the remote's copy of {len(damaged)} object{'s are' if len(damaged) > 1 else ' is'} "
                         f"damaged (its bytes no longer match its hash): {objects}; {kept_out}: delete the damaged "
                         "objects on the remote, then `dvc push` from a good copy (" + ("" if failed else "here, or ")
                         + "the worker that made them)")
    if failed:
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
