"""scripts/lanes.py: which stages run, in which order, how many at once, and how a failure or Ctrl-C ends them.

The scheduling is tested here with small Python commands standing in for `dvc repro -s` (each waits for an
event, never for a time); tests/test_pipeline.py runs `make repro JOBS=2` on a real tiny project.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import COMMAND_TIMEOUT_S, ROOT, kill_group, wait_for

from scripts import lanes
from scripts.lanes import Lanes, Plan, chain_lengths, estimated_costs, parse_args, ready, with_downstream
from stages.ground.errors import StageError

WAIT_S = 60  # every wait of a stand-in stage: far beyond what starting a Python process takes

# download -> split -> (lr_range -> train -> evaluate) per arch -> report, as dvc.yaml has it
QUICK = {"download": set(), "split": {"download"}, "report": set()}
for _arch in ("base", "wide3"):
    QUICK |= {f"lr_range@{_arch}": {"split"}, f"train@{_arch}": {"split", f"lr_range@{_arch}"},
              f"evaluate@{_arch}": {"split", f"train@{_arch}"}}
    QUICK["report"] |= {f"evaluate@{_arch}", f"lr_range@{_arch}", "split"}
ORDER = ["download", "split", "lr_range@base", "train@base", "evaluate@base", "lr_range@wide3", "train@wide3",
         "evaluate@wide3", "report"]


def plan_of(upstream: dict[str, set[str]], cost: dict[str, float] | None = None) -> Plan:
    return Plan(tuple(upstream), {s: frozenset(ups) for s, ups in upstream.items()},
                cost or dict.fromkeys(upstream, 1.0))


def test_what_runs_is_what_changed_and_everything_below_it():
    assert with_downstream(ORDER, QUICK, set()) == []
    assert with_downstream(ORDER, QUICK, {"train@wide3"}) == ["train@wide3", "evaluate@wide3", "report"]
    assert with_downstream(ORDER, QUICK, {"split"}) == ORDER[1:]
    assert with_downstream(ORDER, QUICK, {"report", "lr_range@base"}) == [
        "lr_range@base", "train@base", "evaluate@base", "report"]


def test_the_longest_chain_starts_first():
    cost = {"download": 1, "split": 1, "lr_range@base": 5, "train@base": 10, "evaluate@base": 1,
            "lr_range@wide3": 15, "train@wide3": 40, "evaluate@wide3": 1, "report": 3}
    plan = plan_of(QUICK, cost)
    lengths = chain_lengths(plan.upstream, plan.cost)
    assert lengths["train@wide3"] == 44 and lengths["lr_range@wide3"] == 59 and lengths["download"] == 61
    assert ready(plan, ORDER, set(), lengths) == ["download", "report"][:1]  # report waits for the rest
    after_split = ready(plan, ORDER[2:], {"download", "split"}, lengths)
    assert after_split == ["lr_range@wide3", "lr_range@base"]
    # ties keep the order DVC would run them in
    even = plan_of(QUICK)
    assert ready(even, ORDER[2:], {"download", "split"}, chain_lengths(even.upstream, even.cost)) == [
        "lr_range@base", "lr_range@wide3"]


def test_costs_come_from_the_timing_records_else_from_the_stages_of_the_same_kind(tmp_path):
    timing = tmp_path / "base.train.json"
    timing.write_text(json.dumps({"seconds": 40.0, "cpu_seconds": 12.5, "machine": {}}))
    other = tmp_path / "wide3.train.json"
    other.write_text(json.dumps({"cpu_seconds": 30.5}))
    no_seconds, damaged = tmp_path / "metrics.json", tmp_path / "damaged.json"
    no_seconds.write_text(json.dumps({"val_accuracy": 0.9}))
    damaged.write_text("{")
    costs = estimated_costs(["train@base", "train@wide3", "train@new", "evaluate@base", "report"], {
        "train@base": [timing, no_seconds], "train@wide3": [other, damaged], "train@new": [tmp_path / "missing"],
        "evaluate@base": [no_seconds]})
    assert costs == {"train@base": 12.5, "train@wide3": 30.5, "train@new": 21.5,
                     "evaluate@base": lanes.UNKNOWN_COST_S, "report": lanes.UNKNOWN_COST_S}


@pytest.mark.parametrize("argv, expected", [
    ([], (None, [], ["dvc.yaml"])),
    (["-j", "3", "evidence/dvc.yaml"], (3, [], ["evidence/dvc.yaml"])),
    (["--force", "--jobs", "1", "train@base", "report"], (1, ["--force"], ["train@base", "report"])),
    (["--pull", "-f", "train@base"], (None, ["--pull", "-f"], ["train@base"])),
])
def test_arguments(argv, expected):
    jobs, options, targets = parse_args(argv)
    assert (jobs if expected[0] else None, options, targets) == expected
    assert jobs >= 1


def test_the_interrupt_line_counts_finished_stages_in_words():
    assert [lanes.finished(n) for n in (0, 1, 5)] == [
        "no stage had finished", "the 1 stage that had finished keeps its results",
        "the 5 stages that had finished keep their results"]


@pytest.mark.parametrize("argv", [["-j", "0"], ["-j", "two"], ["-j"], ["-j", "-1"], ["--dry"]])
def test_bad_arguments_say_what_is_allowed(argv):
    with pytest.raises(StageError, match="usage: python -m scripts.lanes"):
        parse_args(argv)


# --- lanes of real processes: Python stand-ins for `dvc repro -s` ----------------------------------------

def stand_in(script: str, events: Path):
    """A command per stage: ``script`` run by Python with STAGE and EVENTS (a folder) defined."""
    preamble = ("import pathlib, sys, time; STAGE = sys.argv[1]; EVENTS = pathlib.Path(sys.argv[2])\n"
                f"def wait_for(name):\n"
                f"    deadline = time.monotonic() + {WAIT_S}\n"
                "    while not (EVENTS / name).exists():\n"
                "        if time.monotonic() > deadline: sys.exit(f'{STAGE}: no {name} within the bound')\n"
                "        time.sleep(0.01)\n")
    return lambda stage: [sys.executable, "-c", preamble + script, stage, str(events)]


PROGRESS = re.compile(r"\[(\d+)/(\d+)\] ")


def own(out: io.StringIO) -> list[str]:
    """The stages' own lines, without lanes' [k/N] lines."""
    return [line for line in out.getvalue().splitlines() if not PROGRESS.match(line)]


def test_independent_stages_run_at_once_and_each_line_says_its_stage(tmp_path):
    # a and b each finish only once the other has started: that happens only if both run at once
    script = "(EVENTS / STAGE).touch(); print('started', STAGE); wait_for({'a': 'b', 'b': 'a'}.get(STAGE, STAGE))"
    out = io.StringIO()
    runner = Lanes(plan_of({"a": set(), "b": set(), "c": {"a", "b"}}), 2, stand_in(script, tmp_path), out)
    runner.run()
    assert runner.finished == {"a", "b", "c"} and runner.failed == [] and runner.most_at_once == 2
    lines = own(out)
    assert sorted(lines) == ["[a] started a", "[b] started b", "[c] started c"]
    assert lines[-1] == "[c] started c"  # c only after both
    progress = [line for line in out.getvalue().splitlines() if PROGRESS.match(line)]
    starts = [line for line in progress if ":" not in line]
    assert [PROGRESS.match(line).groups() for line in starts] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert starts[-1] == "[3/3] c"
    assert progress[-1].startswith("[3/3] c: done, ") and progress[-1].endswith(" s")
    assert len(progress) == 6  # a line as each stage starts, and one as it ends


def test_one_lane_runs_one_stage_at_a_time_in_dependency_order(tmp_path):
    script = "print(STAGE, sorted(p.name for p in EVENTS.iterdir())); (EVENTS / STAGE).touch()"
    out = io.StringIO()
    runner = Lanes(plan_of({"a": set(), "b": {"a"}, "c": set()}, {"a": 1, "b": 1, "c": 5}), 1,
                   stand_in(script, tmp_path), out)
    runner.run()
    assert own(out) == ["[c] c []", "[a] a ['c']", "[b] b ['a', 'c']"]
    assert runner.most_at_once == 1


def test_a_failed_stage_starts_nothing_new_but_lets_the_running_ones_finish(tmp_path):
    # a fails at once; b, already running, finishes after it; c waits for a, so it never starts
    script = "(EVENTS / STAGE).touch()\nif STAGE == 'a': sys.exit(3)\nwait_for('a')"
    runner = Lanes(plan_of({"a": set(), "b": set(), "c": {"a"}}), 2, stand_in(script, tmp_path), io.StringIO())
    runner.run()
    assert runner.failed == ["a"] and runner.finished == {"b"} and not (tmp_path / "c").exists()
    # one lane: the failure comes first (longest chain), and the independent stage is not started after it
    (tmp_path / "a").unlink()
    (tmp_path / "b").unlink()
    runner = Lanes(plan_of({"a": set(), "b": set()}, {"a": 2, "b": 1}), 1, stand_in(script, tmp_path),
                   io.StringIO())
    runner.run()
    assert runner.failed == ["a"] and runner.finished == set() and not (tmp_path / "b").exists()


def wait_for_files(*paths: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not all(path.exists() for path in paths):
        assert time.monotonic() < deadline, f"not all of {paths} within {WAIT_S} s"
        time.sleep(0.01)


# The event file is made inside the try: a Ctrl-C that comes right after it is caught, never between the two.
STOPPABLE = ("import signal\n"
             "if STAGE.startswith('stubborn'): signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
             "try:\n"
             "    (EVENTS / STAGE).touch()  # its signal handling is set up\n"
             "    wait_for('never')\n"
             "except KeyboardInterrupt:\n"
             "    print('cleaned up'); sys.exit(130)\n")


def started(stages: list[str], tmp_path: Path, out: io.StringIO) -> Lanes:
    runner = Lanes(plan_of(dict.fromkeys(stages, set())), len(stages), stand_in(STOPPABLE, tmp_path), out)
    for stage in stages:
        runner.start(stage)
    wait_for_files(*(tmp_path / stage for stage in stages))
    return runner


@pytest.fixture
def sigint_ignored():
    """This process ignores SIGINT, as a background job of a non-interactive shell (CI's) does."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, previous)


def test_stop_ctrl_cs_every_running_stage_and_waits_for_each_to_clean_up(tmp_path, sigint_ignored):
    out = io.StringIO()
    runner = started(["polite-1", "polite-2"], tmp_path, out)
    assert runner.stop() == []  # both ended on their own, long before STOP_TIMEOUT_S
    assert [proc.returncode for proc in runner.running.values()] == [130, 130]
    assert sorted(own(out)) == ["[polite-1] cleaned up", "[polite-2] cleaned up"]


def test_stop_kills_a_stage_that_ignores_ctrl_c_once_the_bound_is_past(tmp_path, monkeypatch):
    monkeypatch.setattr(lanes, "STOP_TIMEOUT_S", 1)  # it never ends on its own: the bound only sets when
    runner = started(["stubborn"], tmp_path, io.StringIO())
    assert runner.stop() == ["stubborn"]
    assert runner.running["stubborn"].returncode == -signal.SIGKILL


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_a_lock_cut_short_is_refused_before_dvc_reads_it(tmp_path, cut):
    lock = tmp_path / "dvc.lock"
    text = (ROOT / "dvc.lock").read_text(encoding="utf-8")
    lock.write_text(text[:int(len(text) * cut)], encoding="utf-8")
    with pytest.raises(StageError, match=rf"^{lock} is damaged \(.*\): restore it with `git checkout {lock}`"):
        lanes.check_locks([lock])


def test_the_committed_locks_pass():
    lanes.check_locks([ROOT / "dvc.lock", ROOT / "evidence/dvc.lock"])


DVC_STAGE_OUTPUT = """Running stage 'train@base':
> python -m stages.train base
train@base: up to 1 epoch(s)
Updating lock file 'dvc.lock'

To track the changes with git, run:

\tgit add dvc.lock reports/train/.gitignore

To enable auto staging, run:

\tdvc config core.autostage true
Use `dvc push` to send your updates to remote storage.
"""


def test_dvcs_lines_after_every_stage_are_left_out_and_its_git_add_paths_kept():
    to_add: set[str] = set()
    kept = [line for line in DVC_STAGE_OUTPUT.splitlines(keepends=True) if lanes.kept_line(line, to_add)]
    assert kept == ["Running stage 'train@base':\n", "> python -m stages.train base\n",
                    "train@base: up to 1 epoch(s)\n"]
    assert to_add == {"dvc.lock", "reports/train/.gitignore"}
    assert not lanes.kept_line("Data and pipelines are up to date.\n", to_add)


def test_the_closing_line_says_what_dvc_did_with_the_stage():
    assert lanes.outcome("Running stage 'report':") == "ran"
    assert lanes.outcome("Stage 'train@base' is cached - skipping run, checking out outputs") == (
        "restored from the run cache")
    assert lanes.outcome("Stage 'split' didn't change, skipping") == "unchanged"
    assert lanes.outcome("train@base: up to 1 epoch(s)") is None


def test_a_failed_stage_closes_with_its_exit_code(tmp_path):
    out = io.StringIO()
    runner = Lanes(plan_of({"a": set()}), 1, stand_in("sys.exit(3)", tmp_path), out)
    runner.run()
    assert out.getvalue().splitlines()[0] == "[1/1] a"
    assert re.fullmatch(r"\[1/1\] a: failed \(exit 3\), [\d.]+ s", out.getvalue().splitlines()[-1])


# lanes as `make repro` runs them (scripts.lanes.run_plan under cli.run), with stand-ins for the stages
RUN_PLAN = ("import sys\n"
            "from scripts import lanes\n"
            "from stages.plumbing.cli import run\n"
            "plan = lanes.Plan(('a', 'b'), {'a': frozenset(), 'b': frozenset()}, {'a': 1.0, 'b': 1.0})\n"
            "events, script = sys.argv[1:]\n"
            "run(lambda argv: lanes.run_plan(plan, 2, lambda stage: [sys.executable, '-c', script, stage, events]))\n")
# Each stage stops only once the test says so: lanes are then inside their stopping.
SLOW_TO_STOP = ("try:\n"
                "    (EVENTS / STAGE).touch()\n"
                "    wait_for('never')\n"
                "except KeyboardInterrupt:\n"
                "    (EVENTS / f'{STAGE}-stopping').touch()\n"
                "    wait_for('go')\n"
                "    print('cleaned up'); sys.exit(130)\n")


def delivered(pid: int, signum: int) -> bool:
    """Whether no ``signum`` sent to process ``pid`` is pending any more (the kernel has handed it over)."""
    pending = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("ShdPnd"))
    return not int(pending.split()[1], 16) & (1 << (signum - 1))


@pytest.mark.parametrize("first, second", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT),
                                           (signal.SIGINT, signal.SIGINT)],
                         ids=["group-SIGTERM-then-make's", "SIGTERM-then-Ctrl-C", "Ctrl-C-twice"])
def test_a_second_signal_while_lanes_stop_cuts_nothing_short(tmp_path, first, second):
    """SIGTERM to make's process group reaches lanes twice: from the group, and from make, which passes it on to
    its child. The second came while lanes were stopping the stages, once in four runs, and ended them without
    their closing line. Here it comes exactly then, every time."""
    script = stand_in(SLOW_TO_STOP, tmp_path)("-")[2]
    proc = subprocess.Popen([sys.executable, "-c", RUN_PLAN, str(tmp_path), script], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_files(tmp_path / "a", tmp_path / "b")
        os.kill(proc.pid, first)
        wait_for_files(tmp_path / "a-stopping", tmp_path / "b-stopping")  # lanes wait for the stages to stop
        os.kill(proc.pid, second)
        wait_for(lambda: delivered(proc.pid, second), "the second signal to reach lanes")
        (tmp_path / "go").touch()
        output, _ = proc.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, output
    lines = output.splitlines()
    assert sorted(line for line in lines if line.endswith("cleaned up")) == ["[a] cleaned up", "[b] cleaned up"]
    assert lines[-1] == ("interrupted: stopped a, b (each says above what became of its outputs); no stage had "
                         "finished; rerun the same command to do the rest"), output
