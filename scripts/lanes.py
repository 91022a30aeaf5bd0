"""`make repro JOBS=N` and `make evidence JOBS=N`: stages that do not depend on each other run at once,
N at a time, each through DVC itself (`dvc --wait-for-lock repro -s <stage>`) in this workspace.

DVC releases its repo lock while a stage's command runs, so several `dvc repro -s` share one workspace. A stage
starts only once every stage it depends on has finished: no two processes ever hold the same stage's outputs,
so DVC never finds one "busy" (treeverse/dvc#11054), and DVC alone decides whether each stage runs, is restored
from the run cache, or is skipped. What runs is what `dvc repro <targets>` would run: the changed stages among
the targets and their upstream, and everything downstream of those. The stage with the longest chain of work
behind it (estimated from the last run's timing records) starts first. Each line a stage prints is prefixed
with its name. Ctrl-C (or SIGTERM) stops every lane.

Usage: python -m scripts.lanes [-j N] [-f] [--pull] [target ...]   (targets and options as `dvc repro` takes them;
default dvc.yaml)
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TextIO

from scripts import up_to_date
from stages.ground.errors import StageError, UsageError
from stages.plumbing import paths
from stages.plumbing.cli import ArgumentParser, run
from stages.plumbing.params import load_params

USAGE = "usage: python -m scripts.lanes [-j N] [-f] [--pull] [target ...]"
STOP_TIMEOUT_S = 120  # how long a stopped stage may take to clean up before it is killed
RUNNING = re.compile(r"Running stage '([^']+)'")  # how `dvc repro` says it runs a stage
DVC = (sys.executable, "-m", "dvc")  # the venv's own dvc, the one `make setup` installed, whatever PATH says
UNKNOWN_COST_S = 1.0  # a stage no timing record says anything about: as cheap as the cheapest


@dataclass(frozen=True)
class Plan:
    """The stages to run, each with the stages it must wait for (among those), and its estimated seconds."""
    stages: tuple[str, ...]  # in an order DVC would run them one at a time
    upstream: dict[str, frozenset[str]]
    cost: dict[str, float]


# --- pure: what runs, in which order -------------------------------------------------------------------


def with_downstream(order: Iterable[str], upstream: dict[str, Iterable[str]], changed: set[str]) -> list[str]:
    """The stages of ``order`` (upstream first) that are ``changed`` or depend, however indirectly, on one that
    is: once a stage reruns, DVC checks everything below it."""
    chosen: list[str] = []
    for stage in order:
        if stage in changed or any(up in chosen for up in upstream.get(stage, ())):
            chosen.append(stage)
    return chosen


def chain_lengths(upstream: dict[str, frozenset[str]], cost: dict[str, float]) -> dict[str, float]:
    """Each stage's cost plus that of the longest chain of stages that wait for it: the least time the work
    from that stage on can take, however many cores."""
    downstream: dict[str, set[str]] = {stage: set() for stage in upstream}
    for stage, ups in upstream.items():
        for up in ups:
            downstream[up].add(stage)
    lengths: dict[str, float] = {}

    def length(stage: str) -> float:
        if stage not in lengths:
            lengths[stage] = cost[stage] + max((length(d) for d in downstream[stage]), default=0.0)
        return lengths[stage]

    for stage in upstream:
        length(stage)
    return lengths


def ready(plan: Plan, waiting: Iterable[str], finished: set[str], priority: dict[str, float]) -> list[str]:
    """The ``waiting`` stages whose upstream has all finished, longest chain first (ties in plan order).

    Args:
        plan: the stages to run and each one's upstream.
        finished: the stages that have ended well.
        priority: each stage's chain_lengths: its cost plus that of the longest chain waiting for it.
    """
    position = {stage: i for i, stage in enumerate(plan.stages)}
    free = [stage for stage in waiting if plan.upstream[stage] <= finished]
    return sorted(free, key=lambda stage: (-priority[stage], position[stage]))


def estimated_costs(stages: Iterable[str], timing_files: dict[str, list[Path]]) -> dict[str, float]:
    """CPU seconds per stage from the `cpu_seconds` of its timing records (the last run's); a stage without one gets
    the mean of its kind (`train@...`), else UNKNOWN_COST_S."""
    known: dict[str, float] = {}
    for stage in stages:
        seconds = [s for path in timing_files.get(stage, []) if (s := _seconds(path)) is not None]
        if seconds:
            known[stage] = sum(seconds)
    by_kind: dict[str, list[float]] = {}
    for stage, seconds in known.items():
        by_kind.setdefault(kind_of(stage), []).append(seconds)
    return {stage: known.get(stage) or _mean(by_kind.get(kind_of(stage))) or UNKNOWN_COST_S for stage in stages}


def kind_of(stage: str) -> str:
    """`train` of `train@base`, `evidence/dvc.yaml:long` of `evidence/dvc.yaml:long@base-1`."""
    return stage.partition("@")[0]


def _seconds(path: Path) -> float | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        # CPU seconds, as train's estimate; wall seconds in a record from before CPU time was recorded
        seconds = record.get("cpu_seconds", record.get("seconds"))
    except (OSError, ValueError, AttributeError):
        return None
    return float(seconds) if isinstance(seconds, (int, float)) and seconds >= 0 else None


def _mean(values: list[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def prefixed(stage: str, line: str) -> str:
    return f"[{stage}] {line.rstrip()}\n"


# What `dvc repro -s` prints after every stage, the same each time: left out, and its `git add` paths said once
# at the end (CLOSING_HINT).
DVC_BOILERPLATE = re.compile(r"(Updating lock file .*|To track the changes with git, run:|To enable auto staging, run:|"
                             r"\s*dvc config core\.autostage true|Use `dvc push` to send your updates to remote "
                             r"storage\.|Data and pipelines are up to date\.|\s*)")
GIT_ADD = re.compile(r"\s*git add (.+)")
# How DVC says what it did with a stage, and the word for it in the closing line.
OUTCOMES = (("Running stage '", "ran"), ("is cached - skipping run", "restored from the run cache"),
            ("didn't change, skipping", "unchanged"))
CLOSING_HINT = "To track the changes with git: git add "


def kept_line(line: str, to_add: set[str]) -> bool:
    """Whether a line of `dvc repro -s` is the stage's own (or DVC's word on the stage) rather than boilerplate;
    the paths of a `git add` hint go into ``to_add``."""
    text = line.rstrip("\n")
    hint = GIT_ADD.fullmatch(text)
    if hint:
        to_add.update(hint[1].split())
        return False
    return not DVC_BOILERPLATE.fullmatch(text)


def outcome(line: str) -> str | None:
    return next((word for said, word in OUTCOMES if said in line), None)


# --- DVC: the plan -------------------------------------------------------------------------------------


LOCKS = (Path("dvc.lock"), Path("evidence/dvc.lock"))
HASHES = ("md5", "hash", "etag", "checksum")  # what DVC records a dep's or an out's content as


def check_locks(locks: Iterable[Path] = LOCKS) -> None:
    """A damaged lock file (cut short, edited by hand) stops us before DVC reads it: DVC would take it for stages
    never run and rerun them without a word."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    for lock in locks:
        if not lock.is_file():
            continue
        fix = f"restore it with `git checkout {lock}` (or delete it: every stage in it then reruns)"
        text = lock.read_text(encoding="utf-8", errors="replace")
        try:
            data = YAML(typ="safe", pure=True).load(text)
        except YAMLError as err:
            raise StageError(f"{lock} is damaged (not valid YAML: {str(err).splitlines()[0]}): {fix}") from None
        problem = _lock_problem(data) if text.endswith("\n") else "it does not end with a line break: cut short?"
        if problem:
            raise StageError(f"{lock} is damaged ({problem}): {fix}")


def _lock_problem(data) -> str | None:
    if not (isinstance(data, dict) and isinstance(data.get("stages"), dict)):
        return "no stages mapping"
    for name, entry in data["stages"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("cmd"), str)):
            return f"stage {name} has no command"
        for key in ("deps", "outs"):
            for item in entry.get(key) or []:
                if not (isinstance(item, dict) and "path" in item and any(h in item for h in HASHES)):
                    return f"an entry of stage {name}'s {key} has no path or no hash: cut short?"
    return None


def make_plan(targets: list[str], force: bool) -> Plan:
    """What `dvc repro [-f] <targets>` would run, with the graph among those stages. DVC's own collection and
    order (the same functions `dvc repro` calls), so what runs is never a guess of ours. Refuses when a stage that
    runs has a folder output holding files a user put there: DVC would delete them with the folder."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    try:
        with Repo(".") as repo:
            graph = get_active_graph(repo.index.graph)
            order = plan_repro(graph, collect_stages(repo, targets))
            names = {stage: stage.addressing for stage in order}
            upstream = {names[stage]: frozenset(names[up] for up in graph.successors(stage) if up in names)
                        for stage in order}
            with repo.lock:
                changed = {names[stage] for stage in order if force or stage.changed()}
            timings = timing_files(order)
            stages = with_downstream(list(names.values()), upstream, changed)
            foreign = {(names[stage], folder): files for stage in order if names[stage] in stages
                       for folder, files in foreign_files(stage).items()}
            if not changed:
                up_to_date.record(targets, looked_at(order))
    except DvcException as err:
        raise StageError(f"dvc: {err}") from None
    if foreign:
        raise StageError(foreign_files_message(foreign))
    return Plan(tuple(stages), {s: upstream[s] & set(stages) for s in stages},
                estimated_costs(stages, timings))


def looked_at(stages) -> set[str]:
    """Every file DVC compares to tell whether these stages changed: their deps, outs and pipeline files."""
    return {os.path.relpath(path) for stage in stages
            for path in (*(item.fs_path for item in (*stage.deps, *stage.outs)), stage.dvcfile.path,
                         getattr(stage.dvcfile, "lockfile", stage.dvcfile.path))}


def foreign_files(stage) -> dict[Path, list[Path]]:
    """The files a user put in each folder output of a DVC stage, which `dvc repro` deletes with the folder before
    it runs the stage (paths.foreign_files); the lock's record of the folder is read from the cache, if there."""
    found = {}
    for out in stage.outs:
        folder = Path(os.path.relpath(out.fs_path))
        if out.persist or folder.is_symlink() or not folder.is_dir():
            continue
        files = paths.foreign_files(folder, recorded_files(out))
        if files:
            found[folder] = files
    return found


def recorded_files(out) -> set[str]:
    """The files (relative paths) of a folder output as its lock entry records it: its .dir object in the cache;
    none when the cache does not have it (a fresh clone)."""
    if not (out.hash_info and out.hash_info.isdir):
        return set()
    try:
        manifest = json.loads(Path(out.cache.oid_to_path(out.hash_info.value)).read_text(encoding="utf-8"))
        return {entry["relpath"] for entry in manifest}
    except (OSError, ValueError, TypeError, KeyError):
        return set()


def foreign_files_message(found: dict[tuple[str, Path], list[Path]]) -> str:
    """One line: each stage's folder output holding a user's files, the first few of them, and where they go."""
    parts = []
    for (stage, folder), files in found.items():
        listed = ", ".join(path.as_posix() for path in files[:5]) + (
            f" and {len(files) - 5}{'+' * (len(files) >= paths.MAX_FOREIGN)} more" if len(files) > 5 else "")
        parts.append(f"{folder} holds {listed}, which {stage} does not write, and `dvc repro` deletes {folder} "
                     f"whole before {stage} runs")
    return "; ".join(parts) + ": move these files to a folder no stage writes (such as notes/), then rerun"


def timing_files(stages) -> dict[str, list[Path]]:
    """Each DVC stage's timing records, by name: a quick-study stage's lies beside its outputs
    (paths.stage_timing), an evidence stage's is one of its outputs."""
    return {stage.addressing: paths.stage_timing(stage.addressing) or
            [path for out in stage.outs if (path := Path(os.path.relpath(out.fs_path))).is_relative_to(
                paths.EVIDENCE_TIMINGS)] for stage in stages}


# --- running the lanes ---------------------------------------------------------------------------------


def dvc_command(stage: str, options: list[str]) -> list[str]:
    return [*DVC, "--wait-for-lock", "repro", "-s", *options, stage]


class Lanes:
    """Runs a plan's stages, ``jobs`` at a time, each as the process ``command`` gives (main: a `dvc repro -s`),
    in its own session, so that Ctrl-C reaches it once, from here."""

    def __init__(self, plan: Plan, jobs: int, command: Callable[[str], list[str]], out: TextIO = sys.stdout):
        self.plan, self.jobs, self.command, self.out = plan, jobs, command, out
        # The stages must stop on the SIGINT stop() sends. Started from a process that ignores SIGINT (a job a
        # non-interactive shell puts in the background, nohup), they would inherit SIG_IGN; Python's own handler
        # is reset to the default at exec.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.priority = chain_lengths(plan.upstream, plan.cost)
        self.running: dict[str, subprocess.Popen] = {}
        self.relays: list[threading.Thread] = []
        self.finished: set[str] = set()
        self.failed: list[str] = []
        self.most_at_once = 0
        # (stage, exit code) as each stage ends; None when SIGINT or SIGTERM asks to stop (stop_requested). A
        # SimpleQueue: its put is safe in a signal handler.
        self.events: queue.SimpleQueue[tuple[str, int] | None] = queue.SimpleQueue()
        self.printing = threading.Lock()
        self.to_add: set[str] = set()  # what DVC's `git add` hints named
        self.outcomes: dict[str, str] = {}
        self.started_at: dict[str, float] = {}

    def say(self, text: str) -> None:
        with self.printing:
            self.out.write(text)
            self.out.flush()

    def progress(self, stage: str) -> str:
        return f"[{list(self.started_at).index(stage) + 1}/{len(self.plan.stages)}] {stage}"

    def start(self, stage: str) -> None:
        self.started_at[stage] = time.perf_counter()
        self.say(self.progress(stage) + "\n")
        proc = subprocess.Popen(self.command(stage), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                text=True, encoding="utf-8", errors="backslashreplace", start_new_session=True)
        self.running[stage] = proc
        self.most_at_once = max(self.most_at_once, len(self.running))
        relay = threading.Thread(target=self.relay, args=(stage, proc), daemon=True)
        relay.start()
        self.relays.append(relay)

    def relay(self, stage: str, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            if kept_line(line, self.to_add):
                self.outcomes[stage] = outcome(line) or self.outcomes.get(stage, "done")
                self.say(prefixed(stage, line))
        self.events.put((stage, proc.wait()))

    def closing_line(self, stage: str, code: int) -> str:
        took = f"{time.perf_counter() - self.started_at[stage]:.1f} s"
        said = self.outcomes.get(stage, "done") if code == 0 else f"failed (exit {code})"
        return f"{self.progress(stage)}: {said}, {took}\n"

    def stop_requested(self, signum, frame) -> None:
        """The handler of SIGINT and SIGTERM while lanes run: run() raises KeyboardInterrupt when it next waits,
        never in the middle of its bookkeeping; any later signal (make passes on the SIGTERM its process group
        got too, a second Ctrl-C) is ignored, so that it cannot cut the stopping short."""
        self.events.put(None)

    def run(self) -> None:
        """The stages to the end, ``jobs`` at once; KeyboardInterrupt when stop_requested (if it is installed)."""
        waiting = list(self.plan.stages)
        while waiting or self.running:
            if not self.failed:
                for stage in ready(self.plan, waiting, self.finished, self.priority)[:self.jobs - len(self.running)]:
                    waiting.remove(stage)
                    self.start(stage)
            if not self.running:
                break  # a stage failed: what waits on nothing more is not started
            event = self.events.get()
            if event is None:
                raise KeyboardInterrupt
            stage, code = event
            del self.running[stage]
            self.say(self.closing_line(stage, code))
            (self.finished.add if code == 0 else self.failed.append)(stage)

    def stop(self) -> list[str]:
        """Ctrl-C every running stage (DVC passes it to the stage's command, which cleans up and says what
        became of its outputs); those still running after STOP_TIMEOUT_S are killed. Returns the killed."""
        for proc in self.running.values():
            _signal_group(proc, signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        killed = []
        for stage, proc in self.running.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
                killed.append(stage)
        for relay in self.relays:
            relay.join(max(0.0, deadline - time.monotonic()))  # their last lines come before ours
        return killed


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass  # it ended meanwhile


def finished(count: int) -> str:
    if count == 0:
        return "no stage had finished"
    return f"the {count} stage{'s' * (count != 1)} that had finished {'keep' if count != 1 else 'keeps'} " \
           f"{'their' if count != 1 else 'its'} results"


def _listing(stages: Iterable[str]) -> str:
    return ", ".join(stages)


def lane_count(value: str) -> int:
    if not (value.isascii() and value.isdigit() and int(value) >= 1):
        raise UsageError(f"{USAGE}: -j (make's JOBS) takes a number of lanes, 1 or more (got {value!r})")
    return int(value)


def parse_args(argv: list[str]) -> tuple[int, list[str], list[str]]:
    """Lanes, the `dvc repro` options each stage gets (-f, --force, --pull: as given), targets."""
    parser = ArgumentParser(USAGE)
    parser.add_argument("-j", "--jobs", type=lane_count, default=len(os.sched_getaffinity(0)))
    for option in ("-f", "--force", "--pull"):
        parser.add_argument(option, dest="options", action="append_const", const=option, default=[])
    parser.add_argument("targets", nargs="*", default=["dvc.yaml"])
    args = parser.parse(argv)
    return args["jobs"], args["options"], args["targets"]


def preflight(targets: list[str], force: bool = False) -> Plan:
    """What runs, once nothing stands in the way: params.yaml whole (a bad value is one line, and none reaches DVC's
    shell), undamaged lock files, no user's file in a folder output of a stage that runs."""
    load_params()
    check_locks()
    return make_plan(targets, force)


def main(argv: list[str]) -> None:
    jobs, options, targets = parse_args(argv)
    if not options and up_to_date.unchanged(targets):
        print("Data and pipelines are up to date. (Nothing changed since DVC last said so.)")
        return
    plan = preflight(targets, force=bool({"-f", "--force"} & set(options)))
    if not plan.stages:
        print("Data and pipelines are up to date.")
        return
    run_plan(plan, jobs, lambda stage: dvc_command(stage, options))


def run_plan(plan: Plan, jobs: int, command: Callable[[str], list[str]]) -> None:
    """The plan's stages on ``jobs`` lanes, each the process ``command`` gives, and the closing lines: what ran,
    what failed, or what Ctrl-C or SIGTERM stopped."""
    lanes = Lanes(plan, jobs, command)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lanes.stop_requested)  # for the rest of this process: the stopping included
    started = time.perf_counter()
    try:
        lanes.run()
    except KeyboardInterrupt:
        stopped = list(lanes.running)
        killed = lanes.stop()
        lanes.say(f"interrupted: stopped {_listing(stopped) or 'no stage'}"
                  + (f" (killed {_listing(killed)}, which had not stopped {STOP_TIMEOUT_S} s after Ctrl-C)"
                     if killed else " (each says above what became of its outputs)")
                  + f"; {finished(len(lanes.finished))}; rerun the same command to do the rest\n")
        raise SystemExit(130) from None
    if lanes.failed:
        never = [s for s in plan.stages if s not in lanes.finished and s not in lanes.failed]
        raise StageError(f"{_listing(lanes.failed)} failed (its lines above start with [{lanes.failed[0]}])"
                         + (f", so {_listing(never)} did not run" if never else "")
                         + "; fix the cause and rerun")
    print(f"lanes: {len(plan.stages)} stage{'s' * (len(plan.stages) != 1)} in {time.perf_counter() - started:.1f} s, "
          f"up to {lanes.most_at_once} at once")
    if lanes.to_add:
        print(CLOSING_HINT + " ".join(sorted(lanes.to_add)))


if __name__ == "__main__":
    run(main, usage=USAGE)
