"""scripts/worker.py: who trains what, and workers sharing their results through a real SSH remote.

The end-to-end tests run a real sshd on 127.0.0.1 (Debian's openssh-server; .ci/run installs it) with a
throwaway host key and user key, and tiny projects: two workers at once, each on its half of the archs, then an
aggregator with an empty cache that must train nothing; and a worker killed with SIGKILL mid-training, run again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from harness import (
    COMMAND_TIMEOUT_S,
    TEAM_TRAINING,
    Project,
    Team,
    example_params,
    free_port,
    kill_group,
    ran,
    read_until,
    remote_is_whole,
    results,
    team_of,
    team_project,
    tiny_project,
)

from scripts.worker import arch_of, deal, parse_args, share
from stages.ground.errors import StageError

SSHD_START_S = 30
# free_port() only proposes a port: a process on another xdist worker may bind it before sshd does
SSHD_PORT_TRIES = 3
PROCESSES_GONE_S = 60  # for init to reap what SIGKILL ended: milliseconds


def test_each_stage_belongs_to_its_arch_and_the_rule_check_to_its_arch():
    archs, rules_arch = ["base", "my-net", "my"], "base"
    assert arch_of("train@my-net", archs, rules_arch) == "my-net"
    assert arch_of("evidence/dvc.yaml:range@my-net-2", archs, rules_arch) == "my-net"
    assert arch_of("evidence/dvc.yaml:grid@my-1", archs, rules_arch) == "my"
    assert arch_of("evidence/dvc.yaml:long_rules@grid_best-3", archs, rules_arch) == "base"
    for shared in ("download", "split", "report", "evidence/dvc.yaml:answer", "train@gone"):
        assert arch_of(shared, archs, rules_arch) is None


def test_archs_are_dealt_costliest_first_to_the_least_loaded_shard():
    costs = {"base": 10.0, "deep3": 14.0, "deep4": 15.0, "wide3": 30.0}
    assert deal(costs, 2) == [["wide3"], ["deep4", "deep3", "base"]]
    assert deal(costs, 3) == [["wide3"], ["deep4"], ["deep3", "base"]]
    assert deal(costs, 5)[4] == []
    stages = ["download", "lr_range@base", "lr_range@wide3", "train@base", "report"]
    by_arch = {stage: arch_of(stage, costs, "base") for stage in stages}
    assert share(stages, by_arch, {"base"}) == ["lr_range@base", "train@base"]


@pytest.mark.parametrize("argv, message", [
    ([], "give one of --shard, --stages, --aggregate"),
    (["--shard", "2/2"], "--shard takes I/N with 0 <= I < N <= 1,000"),
    (["--shard", "0/1000000000"], "--shard takes I/N with 0 <= I < N <= 1,000 (got '0/1000000000')"),
    (["--shard", "0/" + "9" * 100_000], "--shard takes I/N with 0 <= I < N <= 1,000 (got '0/99999999999"),
    (["--shard", "one/two"], "--shard takes I/N"),
    (["--shard", "0/2", "--aggregate"], "give one of"),
    (["--stages", " "], "--stages is empty"),
    (["--pipeline", "other.yaml", "--aggregate"], "--pipeline takes one of dvc.yaml, evidence/dvc.yaml"),
    (["--shard"], "--shard takes a value"),
    (["--now"], "(got '--now')"),
])
def test_bad_arguments_say_what_is_allowed(argv, message):
    with pytest.raises(StageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_args(argv)


# --- a real sshd ---------------------------------------------------------------------------------------------


@dataclass
class Sshd:
    port: int
    user: str
    key: Path
    root: Path  # where remotes go

    def url(self, name: str) -> str:
        return f"ssh://127.0.0.1:{self.port}{self.root / name}"


def start_sshd(binary: str, base: Path, port: int) -> subprocess.Popen | None:
    """sshd on ``port``, once it answers there as an SSH server; None if another process had taken the port."""
    (base / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {base / 'host_key'}",
        f"AuthorizedKeysFile {base / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        f"PidFile {base / 'sshd.pid'}", "Subsystem sftp internal-sftp", ""]))
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(base / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + SSHD_START_S
    while True:  # until it answers with SSH's banner (an event; not some other server on the port), bounded
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if conn.recv(4) == b"SSH-":
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_group(proc)
            why = proc.stderr.read()
            if "Address already in use" in why:
                return None
            pytest.fail(f"sshd did not start: {why}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(binary):
        pytest.skip("no sshd here (Debian: apt-get install openssh-server; .ci/run installs it)")
    base = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True)
    (base / "authorized_keys").write_text((base / "user_key.pub").read_text())
    (base / "authorized_keys").chmod(0o600)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # its privilege separation folder, as the package's service makes
    for _ in range(SSHD_PORT_TRIES):
        port = free_port()
        proc = start_sshd(binary, base, port)
        if proc is not None:
            break
    else:
        pytest.fail(f"sshd found each of {SSHD_PORT_TRIES} free ports taken by the time it bound it")
    (base / "remotes").mkdir()
    try:
        yield Sshd(port, os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True,
                                                                  check=True).stdout.strip(),
                   base / "user_key", base / "remotes")
    finally:
        kill_group(proc)


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Team:
    return team_of(team_project(tmp_path_factory.mktemp("team")))


def clone(team: Team, sshd: Sshd, dest: Path, remote: str) -> Project:
    """A fresh copy of the committed project (empty DVC cache), with the remote as the team's default."""
    shutil.copytree(team.template, dest, symlinks=True)
    p = Project(dest, team.env)
    p.dvc("remote", "add", "-d", "shared", sshd.url(remote))
    p.dvc("remote", "modify", "shared", "user", sshd.user)
    p.dvc("remote", "modify", "shared", "verify", "true")  # as README's recipe: the workers refuse a remote without
    p.dvc("remote", "modify", "--local", "shared", "keyfile", str(sshd.key))
    return p


def worker(p: Project, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scripts.worker", "-j", "1", *args], cwd=p.root, env=p.env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def finished(proc: subprocess.Popen) -> str:
    try:
        output, _ = proc.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def two_pushed(team, sshd, tmp_path_factory) -> list[str]:
    """Two workers at once, each with its half, both pushing to the sshd's remote `two`; their outputs."""
    base = tmp_path_factory.mktemp("two")
    workers = [clone(team, sshd, base / f"worker{i}", "two") for i in range(2)]
    procs = [worker(p, "--shard", f"{i}/2") for i, p in enumerate(workers)]
    return [finished(proc) for proc in procs]


@pytest.mark.slow
def test_two_workers_at_once_then_an_aggregator_that_trains_nothing(team, sshd, two_pushed, tmp_path):
    trained = [set(ran(output)) & TEAM_TRAINING for output in two_pushed]
    assert trained[0] and trained[1] and not trained[0] & trained[1], two_pushed  # each its own half
    remote_is_whole(sshd.root / "two")

    aggregator = clone(team, sshd, tmp_path / "aggregator", "two")
    output = finished(worker(aggregator, "--aggregate"))
    assert ran(output) == ["report"], output
    for stage in TEAM_TRAINING | {"download", "split"}:
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in output, output
    assert results(aggregator) == results(team.single)
    assert aggregator.status() == {}


def gone(pids: list[int], timeout: float) -> None:
    """Return once none of ``pids`` exists (reaped, not even a zombie); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline, f"process {pid} still exists {timeout:g} s after SIGKILL"
            time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, parents first."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                pass  # it ended meanwhile
    found, i = [pid], 0
    while i < len(found):
        found += [child for child, parent in parents.items() if parent == found[i]]
        i += 1
    return found


@pytest.mark.slow
def test_a_worker_killed_mid_training_leaves_nothing_half_pushed_and_its_rerun_finishes_the_job(team, sshd,
                                                                                                 tmp_path):
    p = clone(team, sshd, tmp_path / "worker", "killed")
    proc = worker(p, "--shard", "0/1")
    try:
        read_until(proc, lambda line: line.startswith("[train@") and "Epoch 3/" in line, "training under way",
                   COMMAND_TIMEOUT_S)
        killed = descendants(proc.pid)
        for pid in killed:  # the machine dies: the worker, its lanes, dvc and the stage
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(COMMAND_TIMEOUT_S)
    finally:
        kill_group(proc)
    # As after a real crash, none of them exists any more when the worker reruns: DVC takes a process it finds in
    # its lock file for alive (an orphan not yet reaped, too) and would call its outputs busy.
    gone(killed, PROCESSES_GONE_S)
    remote = sshd.root / "killed"
    if remote.exists():
        remote_is_whole(remote, killed=True)

    output = finished(worker(p, "--shard", "0/1"))
    assert "worker: done" in output
    assert results(p) == results(team.single)
    remote_is_whole(remote, killed=True)
    aggregator = clone(team, sshd, tmp_path / "aggregator", "killed")
    output = finished(worker(aggregator, "--aggregate"))
    assert ran(output) == ["report"], output
    assert results(aggregator) == results(team.single)


@pytest.mark.slow
def test_a_worker_without_a_remote_says_how_to_add_one(tmp_path):
    p = tiny_project(tmp_path, example_params())
    done = subprocess.run([sys.executable, "-m", "scripts.worker", "--shard", "0/2"], cwd=p.root, env=p.env,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: no default DVC remote: add the team's with `dvc remote add -d <name> " \
                                  "<url>` and commit .dvc/config (docs/workers.md: Past one machine)"


@pytest.mark.slow
def test_the_aggregator_stops_before_dvc_deletes_a_users_files_in_a_folder_output(tmp_path):
    p = tiny_project(tmp_path, example_params())
    p.dvc("remote", "add", "-d", "store", str(tmp_path / "remote"))
    p.dvc("remote", "modify", "store", "verify", "true")
    mine = p.root / "reports/figures/mine.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"a user's figure")
    done = subprocess.run([sys.executable, "-m", "scripts.worker", "--aggregate"], cwd=p.root, env=p.env,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "error: reports/figures holds reports/figures/mine.png, which report does not write, and `dvc repro` "
        "deletes reports/figures whole before report runs: move these files to a folder no stage writes (such as "
        "notes/), then rerun"]
    assert mine.read_bytes() == b"a user's figure" and not (p.root / "data/raw").exists()  # nothing ran


@pytest.mark.slow
@pytest.mark.parametrize("how", [["--shard", "0/2"], ["--aggregate"]])
def test_a_remote_that_does_not_verify_what_it_downloads_is_refused_by_name(tmp_path, how):
    p = tiny_project(tmp_path, example_params())
    p.dvc("remote", "add", "-d", "store", str(tmp_path / "remote"))  # the ordinary way: no verify
    done = subprocess.run([sys.executable, "-m", "scripts.worker", *how], cwd=p.root, env=p.env,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "error: the default DVC remote 'store' does not verify what it downloads, so a damaged object on it would "
        "reach the workspace: `dvc remote modify store verify true`, then commit .dvc/config "
        "(docs/workers.md: Past one machine)"]


def pushed(team: Team, where: Path, remote: Path) -> Project:
    """The single machine's results committed and pushed to a folder remote set to verify, as README says."""
    p = team.single.copy(where)
    p.dvc("remote", "add", "-d", "store", str(remote))
    p.dvc("remote", "modify", "store", "verify", "true")
    p.commit("results and remote")
    p.dvc("push")
    return p


@pytest.mark.slow
def test_the_aggregator_names_a_damaged_object_on_the_remote_and_how_to_repair_it(team, tmp_path):
    remote = tmp_path / "remote"
    source = pushed(team, tmp_path / "source", remote)
    aggregator = Project(tmp_path / "aggregator", team.env)
    source.run("git", "clone", "-q", str(source.root), str(aggregator.root))
    lock = yaml.safe_load(source.read("dvc.lock"))
    (folder,) = [out["md5"] for out in lock["stages"]["train@base"]["outs"] if out["path"] == "models/base"]
    manifest = json.loads((remote / "files/md5" / folder[:2] / folder[2:]).read_text())
    model = next(entry for entry in manifest if entry["relpath"].endswith(".keras"))
    damaged = remote / "files/md5" / model["md5"][:2] / model["md5"][2:]
    damaged.chmod(0o644)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))

    done = subprocess.run([sys.executable, "-m", "scripts.worker", "--aggregate"], cwd=aggregator.root,
                          env=aggregator.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: the remote's copy of 1 object is damaged (its bytes no longer match its hash): {damaged} "
        f"(models/base/{model['relpath']}); this run made those outputs anew here, so the damage stayed out of the "
        "workspace: delete the damaged objects on the remote, then `dvc push` from a good copy (here, or the "
        "worker that made them)"), done.stderr
    assert "neither a worker nor the remote had their results" not in done.stdout
    assert "train@base" in ran(done.stdout)
    assert results(aggregator) == results(team.single)  # what was made anew, not the damage


@pytest.mark.slow
def test_a_failed_push_says_what_a_push_cut_short_leaves_on_the_remote_and_how_to_clean_it(team, tmp_path):
    (tmp_path / "a file").write_text("no folder for a remote")
    p = Project(tmp_path / "worker", team.env)
    shutil.copytree(team.template, p.root, symlinks=True)
    p.dvc("remote", "add", "-d", "store", str(tmp_path / "a file" / "remote"))
    p.dvc("remote", "modify", "store", "verify", "true")
    done = subprocess.run([sys.executable, "-m", "scripts.worker", "--stages", "download"], cwd=p.root, env=p.env,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        "error: `dvc push --with-deps download` failed (its output is above); fix that and run the worker again: "
        "what it finished is kept; a push cut short may leave partial .tmp files on the remote: `make prune-remote` "
        "removes those older than a day"), done.stderr


@pytest.mark.slow
def test_sigterm_to_the_worker_alone_stops_its_lanes_and_their_stages_and_says_so(team, sshd, tmp_path):
    p = clone(team, sshd, tmp_path / "worker", "stopped")
    proc = worker(p, "--shard", "0/1")
    try:
        seen = read_until(proc, lambda line: line.startswith("[train@") and "Epoch 3/" in line, "training under way",
                          COMMAND_TIMEOUT_S)
        os.kill(proc.pid, signal.SIGTERM)  # as a process manager stops a service: the worker, not its group
        rest, _ = proc.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        kill_group(proc)
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    # lanes was told, not killed: it stopped every stage (none had to be killed) and said so
    assert re.fullmatch(r"interrupted: stopped \S.* \(each says above what became of its outputs\); .*; rerun the "
                        r"same command to do the rest", output.splitlines()[-1]), output


@pytest.mark.slow
def test_the_aggregator_names_a_damaged_object_a_worker_pushed(team, sshd, two_pushed, tmp_path):
    """On a copy of what the two workers above pushed over SSH (the same objects, the same modes), one object
    damaged."""
    shutil.copytree(sshd.root / "two", sshd.root / "damaged")
    # the workers' results are byte for byte the single machine's: so is the hash of models/base
    lock = yaml.safe_load(team.single.read("dvc.lock"))
    (folder,) = [out["md5"] for out in lock["stages"]["train@base"]["outs"] if out["path"] == "models/base"]
    remote = sshd.root / "damaged" / "files" / "md5"
    model = next(entry for entry in json.loads((remote / folder[:2] / folder[2:]).read_text())
                 if entry["relpath"].endswith(".keras"))
    damaged = remote / model["md5"][:2] / model["md5"][2:]
    damaged.chmod(0o644)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))

    aggregator = clone(team, sshd, tmp_path / "aggregator", "damaged")
    proc = worker(aggregator, "--aggregate")
    try:
        output, _ = proc.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        kill_group(proc)
    assert proc.returncode == 1, output
    last = output.splitlines()[-1]
    assert last.startswith(f"error: the remote's copy of 1 object is damaged (its bytes no longer match its hash): "
                           f"{damaged} (models/base/{model['relpath']}); "), output
    assert last.endswith(": delete the damaged objects on the remote, then `dvc push` from a good copy (here, or the "
                         "worker that made them)"), output
    assert "neither a worker nor the remote had their results" not in output
