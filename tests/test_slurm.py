"""scripts/slurm.py (`make slurm`, `make slurm-status`), deploy/slurm/task.sbatch and deploy/k8s/worker-job.yaml.

The end-to-end tests submit to a real one-node SLURM cluster (tests/slurm_cluster.py: munged, slurmctld and
slurmd; .ci/run installs Debian's slurm-wlm and munge) the workers of tiny projects that share a folder remote:
two array tasks at once, then the aggregator; a share that fails; a share cancelled with scancel mid-training,
then resubmitted.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from harness import (
    COMMAND_TIMEOUT_S,
    ROOT,
    TEAM_ARCHS,
    TEAM_TRAINING,
    Project,
    Team,
    as_after_make_setup,
    ran,
    remote_is_whole,
    results,
    team_of,
    team_project,
)
from slurm_cluster import Cluster, Unavailable, start, stop

from scripts import slurm
from scripts.slurm import LOGS, Submission, aggregator_argv, describe, parse_args, worker_command, workers_argv
from stages.ground.errors import StageError, UsageError

POLL_S = 0.05


# --- arguments and sbatch lines ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    ([], "WORKERS is missing: for example `make slurm WORKERS=4`"),
    (["--workers", "0"], "WORKERS takes a whole number from 1 to 1,000 (got '0')"),
    (["--workers", "1001"], "WORKERS takes a whole number from 1 to 1,000"),
    (["--workers", "9" * 100_000], "WORKERS takes a whole number from 1 to 1,000 (got '99999999999999999999')"),
    (["--workers", "-1"], "WORKERS takes a whole number"),
    (["--workers", "2", "--cpus", "0"], "CPUS takes a whole number from 1 to 256"),
    (["--workers", "2", "--only", "2"], "ONLY takes shares from 0 to 1 of WORKERS=2 (got 2)"),
    (["--workers", "2", "--only", "1;rm"], "ONLY takes share numbers separated by commas"),
    (["--workers", "2", "--pipeline", "x.yaml"], "PIPELINE takes dvc.yaml or evidence/dvc.yaml (got 'x.yaml')"),
    (["--workers", "2", "--now"], "usage: python -m scripts.slurm --workers N [--pipeline FILE] [--cpus C] "
                                  "[--only I,J] [--venv DIR] (got '--now')"),
    (["--workers"], "usage: python -m scripts.slurm --workers N [--pipeline FILE] [--cpus C] [--only I,J] "
                    "[--venv DIR] (--workers takes a value)"),
    (["--status", "12;x"], "JOB takes the array's job id"),
    (["--status", "12", "--workers", "2"], "--status takes no --workers"),
])
def test_bad_arguments_say_what_is_allowed_in_one_line(argv, message):
    with pytest.raises(UsageError) as err:
        parse_args(argv)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_each_task_runs_the_worker_of_its_share_with_its_logs_in_the_logs_folder(tmp_path):
    venv = tmp_path / ".venv"
    argv = workers_argv(tmp_path, venv, 4, [0, 1, 2, 3], "evidence/dvc.yaml", 2)
    assert argv[:2] == ["sbatch", "--parsable"] and "--array=0-3" in argv and "--cpus-per-task=2" in argv
    assert f"--output={tmp_path / LOGS}/%A_%a.out" in argv
    assert argv[-5:] == [str(tmp_path / "deploy/slurm/task.sbatch"), str(tmp_path / LOGS), "clone", str(venv),
                         "make worker SHARD=$SLURM_ARRAY_TASK_ID/4 PIPELINE=evidence/dvc.yaml JOBS=2"]
    assert "--array=1,3" in workers_argv(tmp_path, venv, 4, [1, 3], "dvc.yaml", 1)
    aggregate = aggregator_argv(tmp_path, venv, "12", "dvc.yaml")
    assert "--dependency=afterok:12" in aggregate and "--kill-on-invalid-dep=yes" in aggregate
    assert f"--output={tmp_path / LOGS}/%j.out" in aggregate
    assert aggregate[-3:] == ["here", str(venv), "make aggregate PIPELINE=dvc.yaml"]


@pytest.mark.parametrize("command, code, status", [
    ("exit 0", 0, "0\n"),
    ("exit 2", 2, "2\n"),
    # ended by SIGTERM (scancel, the time limit) before the task script's own trap ran: no status, as when the
    # trap runs first, so that slurm-status says cancelled, not failed
    ("kill -TERM $$", 143, None),
])
def test_the_task_records_an_exit_status_only_for_a_command_that_ended_on_its_own(tmp_path, command, code, status):
    logs = tmp_path / "logs"
    logs.mkdir()
    done = subprocess.run(["bash", str(ROOT / "deploy/slurm/task.sbatch"), str(logs), "here", str(tmp_path / "venv"),
                           command], cwd=tmp_path, env={**os.environ, "SLURM_JOB_ID": "7"}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == code, done.stderr
    exit_file = logs / "7.exit"
    assert (exit_file.read_text() if exit_file.exists() else None) == status
    if status is None:
        assert done.stderr.endswith("job 7 stopped by signal 15\n"), done.stderr


def test_the_kubernetes_job_runs_the_command_of_the_slurm_tasks():
    job = yaml.safe_load((ROOT / "deploy/k8s/worker-job.yaml").read_text())
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    (container,) = spec["template"]["spec"]["containers"]
    cpus = int(container["resources"]["requests"]["cpu"])
    assert container["command"] == ["sh", "-c", worker_command("JOB_COMPLETION_INDEX", spec["completions"],
                                                               "dvc.yaml", cpus)]
    assert container["command"][2].replace("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID") == \
        workers_argv(ROOT, ROOT / ".venv", spec["completions"], [0], "dvc.yaml", cpus)[-1]


def test_the_status_names_the_failed_and_lost_shares_and_the_one_command_that_reruns_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    LOGS.mkdir()
    record = Submission("12", "13", 4, [0, 1, 2, 3], "evidence/dvc.yaml", 1)
    (LOGS / "12_0.exit").write_text("0\n")
    (LOGS / "12_1.exit").write_text("2\n")
    lines, failed = describe(record, {"12_2": "running"})  # 12_3 ended without a word: scancel, say
    assert lines == ["share 0/4 (job 12_0): done",
                     "share 1/4 (job 12_1): failed, exit 2 (its log: slurm-logs/12_1.out)",
                     "share 2/4 (job 12_2): running",
                     "share 3/4 (job 12_3): ended without an exit status: cancelled, out of time or its node lost "
                     "(slurm-logs/12_3.out)",
                     "aggregate (job 13): did not run: a share failed"]
    assert record.rerun(failed) == "make slurm WORKERS=4 ONLY=1,3 PIPELINE=evidence/dvc.yaml"


def test_submitting_without_sbatch_says_where_to_run_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StageError, match=r"^sbatch not found: run `make slurm` where SLURM jobs are submitted"):
        slurm.submit(parse_args(["--workers", "2"]))


# --- a real cluster ------------------------------------------------------------------------------------------


# free_port() only proposes the daemons' ports: a process on another xdist worker may bind one before they do
CLUSTER_PORT_TRIES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    for _ in range(CLUSTER_PORT_TRIES):
        try:
            running = start(tmp_path_factory.mktemp("slurm"))
            break
        except Unavailable as why:
            if "Address already in use" not in str(why):
                pytest.skip(f"no SLURM cluster: {why}")
    else:
        pytest.fail(f"the SLURM daemons found their free ports taken by the time they bound them, {CLUSTER_PORT_TRIES} "
                    "times")
    try:
        yield running
    finally:
        stop(running)


def slurm_team_project(base: Path, archs: dict = TEAM_ARCHS, epochs: int = 40) -> Project:
    """team_project with the Makefile, deploy/ and bench/, committed."""
    p = team_project(base, archs, epochs)
    as_after_make_setup(p)
    for folder in ("deploy", "bench"):
        shutil.copytree(ROOT / folder, p.root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    with open(p.root / ".gitignore", "a") as f:
        f.write("/slurm-logs/\n")
    p.commit("the Makefile and the SLURM task")
    return p


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Team:
    return team_of(slurm_team_project(tmp_path_factory.mktemp("team")))  # 40 epochs: cancelled while training


def project(template: Path, env: dict[str, str], cluster: Cluster, dest: Path) -> Project:
    """A copy of the committed project whose default remote, committed as a team would, is a fresh folder."""
    shutil.copytree(template, dest, symlinks=True)
    p = Project(dest, {**env, **cluster.env})
    p.dvc("remote", "add", "-d", "shared", str(dest.parent / f"{dest.name}-remote"))
    p.dvc("remote", "modify", "shared", "verify", "true")  # the workers refuse a remote without it
    p.commit("the team's remote")
    return p


def submit(p: Project, *variables: str) -> tuple[str, str, str]:
    """`make slurm ...`: its output, the array's and the aggregator's job ids."""
    output = p.run("make", "-s", "slurm", *variables)
    array, aggregator = re.findall(r"slurm: (?:workers|aggregator): job (\d+)", output)
    return output, array, aggregator


def queued(cluster: Cluster, *jobs: str) -> list[str]:
    """The states of ``jobs``' tasks SLURM still has queued or running, one per task."""
    return cluster.run("squeue", "-h", "-r", "-j", ",".join(jobs), "-o", "%T", check=False).split()


def wait_until(happened, what: str, timeout: float = COMMAND_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not happened():
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(POLL_S)


def times(cluster: Cluster, job: str) -> tuple[str, str]:
    """(StartTime, EndTime) of ``job`` as scontrol says them (to the second)."""
    fields = dict(re.findall(r"(\w+)=(\S+)", cluster.run("scontrol", "show", "job", "-o", job)))
    return fields["StartTime"], fields["EndTime"]


def log(p: Project, job: str) -> str:
    return (p.root / LOGS / f"{job}.out").read_text(errors="replace")


@pytest.mark.slow
def test_two_tasks_at_once_then_the_aggregator_after_both_trains_nothing(team, cluster, tmp_path):
    p = project(team.template, team.env, cluster, tmp_path / "project")
    (p.root / "params.yaml").write_text(p.read("params.yaml") + "# edited\n")
    refused = p.call("make", "-s", "slurm", "WORKERS=2")  # the tasks would clone HEAD, without the edit
    assert refused.returncode != 0 and refused.stderr.splitlines()[0] == (
        "error: the workers run a clone of HEAD, which lacks your changes to params.yaml: commit them (or `git "
        "stash`), then rerun"), refused.stderr
    p.run("git", "checkout", "--", "params.yaml")
    output, array, aggregator = submit(p, "WORKERS=2")
    assert f"slurm: logs: slurm-logs/{array}_<share>.out and slurm-logs/{aggregator}.out" in output
    assert f"squeue -j {array},{aggregator}" in output and f"make slurm-status JOB={array}" in output
    wait_until(lambda: queued(cluster, array).count("RUNNING") == 2, "both tasks running at once")
    wait_until(lambda: not queued(cluster, array, aggregator), "the jobs to end")

    tasks = [log(p, f"{array}_{i}") for i in range(2)]
    trained = [set(ran(task)) & TEAM_TRAINING for task in tasks]
    assert trained[0] and trained[1] and not trained[0] & trained[1], tasks  # each its own share
    assert trained[0] | trained[1] == TEAM_TRAINING
    remote_is_whole(tmp_path / "project-remote")
    aggregated = log(p, aggregator)
    assert ran(aggregated) == ["report"], aggregated
    for stage in TEAM_TRAINING:
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in aggregated, aggregated
    assert times(cluster, aggregator)[0] >= max(times(cluster, f"{array}_{i}")[1] for i in range(2))
    assert results(p) == results(team.single)
    assert p.status() == {}
    assert not list(Path(p.env["TMPDIR"]).glob("mnist-lr-*"))  # the tasks' clones are gone
    status = p.run("make", "-s", "slurm-status")
    assert status.splitlines() == [f"share 0/2 (job {array}_0): done", f"share 1/2 (job {array}_1): done",
                                   f"aggregate (job {aggregator}): done: the results are in this folder"]


@pytest.mark.slow
def test_a_failed_share_keeps_the_aggregator_from_running_and_the_status_says_how_to_rerun_it(cluster, tmp_path):
    broken = {**TEAM_ARCHS, "b": {"hidden": [6, 4], "batch_size": 60_000}}  # more than the images: its range test fails
    (tmp_path / "team").mkdir()
    template = slurm_team_project(tmp_path / "team", broken, epochs=1)
    p = project(template.root, template.env, cluster, tmp_path / "project")
    _, array, aggregator = submit(p, "WORKERS=2")
    wait_until(lambda: not queued(cluster, array, aggregator), "the jobs to end")

    assert not (p.root / LOGS / f"{aggregator}.exit").exists()  # it never ran
    logs = {i: log(p, f"{array}_{i}") for i in range(2)}
    (failed,) = [i for i, text in logs.items() if "[lr_range@b]" in text]
    assert "lr_range: 250 training images in batches of 60,000" in logs[failed], logs[failed]
    assert f"job {array}_{failed} failed (exit 2): `make slurm-status` names the command that reruns only what " \
           "failed" in logs[failed]
    status = p.run("make", "-s", "slurm-status", f"JOB={array}").splitlines()
    assert status == [f"share {i}/2 (job {array}_{i}): " + (
                          f"failed, exit 2 (its log: slurm-logs/{array}_{i}.out)" if i == failed else "done")
                      for i in range(2)] + [
                      f"aggregate (job {aggregator}): did not run: a share failed",
                      f"rerun only share {failed}, then aggregate: make slurm WORKERS=2 ONLY={failed}"]


@pytest.mark.slow
def test_a_share_cancelled_mid_training_is_resubmitted_alone_and_finishes_with_nothing_half_written(team, cluster,
                                                                                                   tmp_path):
    p = project(team.template, team.env, cluster, tmp_path / "project")
    _, array, aggregator = submit(p, "WORKERS=2")
    task_log = p.root / LOGS / f"{array}_0.out"
    wait_until(lambda: task_log.exists() and re.search(r"^\[train@\S+\] Epoch 3/", task_log.read_text(errors="replace"),
                                                       re.M), "training under way")
    cluster.run("scancel", f"{array}_0")
    wait_until(lambda: not queued(cluster, array, aggregator), "the other share to end, the aggregator cancelled")
    remote = tmp_path / "project-remote"
    remote_is_whole(remote, killed=True)  # share 1's results, whole; nothing of share 0 half-written
    status = p.run("make", "-s", "slurm-status").splitlines()
    assert status[0].startswith(f"share 0/2 (job {array}_0): ended without an exit status: cancelled"), status
    assert status[1:] == [f"share 1/2 (job {array}_1): done", f"aggregate (job {aggregator}): did not run: a share "
                          "failed", "rerun only share 0, then aggregate: make slurm WORKERS=2 ONLY=0"]
    assert not list(Path(p.env["TMPDIR"]).glob("mnist-lr-*"))  # the cancelled task's clone is gone too

    _, array, aggregator = submit(p, "WORKERS=2", "ONLY=0")
    wait_until(lambda: not queued(cluster, array, aggregator), "the resubmitted jobs to end")
    assert "worker: done" in log(p, f"{array}_0")
    assert ran(log(p, aggregator)) == ["report"], log(p, aggregator)  # share 1's stages came from the remote
    remote_is_whole(remote, killed=True)
    assert results(p) == results(team.single)
    assert p.run("make", "-s", "slurm-status").splitlines() == [
        f"share 0/2 (job {array}_0): done", f"aggregate (job {aggregator}): done: the results are in this folder"]


@pytest.mark.slow
def test_the_benchmark_runs_make_repro_and_make_slurm_and_says_what_slurm_adds(cluster, tmp_path):
    (tmp_path / "team").mkdir()
    p = slurm_team_project(tmp_path / "team", epochs=1)
    p = Project(p.root, {**p.env, **cluster.env})
    p.dvc("repro", "download")  # the benchmark copies data/raw in as a local source
    p.commit("MNIST downloaded")
    output = p.run("python", "-m", "bench.slurm")
    assert re.search(r"^make slurm WORKERS=2, then the aggregator +\d+\.\d s +ratio \d+\.\d\d$", output, re.M), output
    for line in ("make repro (JOBS=", "submit to the first task's start", "last task's end to the aggregator's start"):
        assert line in output, output


def test_the_projection_finds_the_longest_chain_and_schedules_longest_chain_first():
    from bench.slurm_projection import chain, list_schedule

    upstream = {"split": frozenset(), "range": frozenset({"split"}), "grid": frozenset({"split"}),
                "long": frozenset({"range"}), "answer": frozenset({"long", "grid"})}
    cost = {"split": 1.0, "range": 2.0, "grid": 5.0, "long": 4.0, "answer": 1.0}
    assert chain(upstream, cost) == (8.0, ["split", "range", "long", "answer"])
    assert list_schedule(upstream, cost, 1) == sum(cost.values())
    assert list_schedule(upstream, cost, 2) == 8.0  # range, then long, beside grid: the chain bounds it
