"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd (Debian's `slurm-wlm` and `munge`;
.ci/run installs them) started as root with everything (config, state, spool, logs, munge key and socket) under one
folder and on free ports, without systemd; stopped by the PIDs recorded here.

What this machine needs (found by trying): munged run as root with its own key, socket, log, pid and seed files,
the socket's folder and every folder above it executable by all; the node's line from `slurmd -C`; no cgroups
(proctrack/linuxproc, task/none); ReturnToService=2 and EnforcePartLimits=ALL, or a node or a job waits for ever.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import free_port

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "scancel")
START_S = 60  # munged and the node up: about a second here
STOP_S = 30
POLL_S = 0.1


class Unavailable(Exception):
    """SLURM cannot run here; the message says why (the tests skip with it)."""


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]  # SLURM_CONF: what every client (sbatch, squeue, scancel) needs
    procs: dict[str, int] = field(default_factory=dict)  # daemon -> pid

    def run(self, *cmd: str, check: bool = True) -> str:
        done = subprocess.run(cmd, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-10:])
                         for path in sorted((self.root / "log").glob("*")))


def _wait(happened, bound: float) -> bool:
    deadline = time.monotonic() + bound
    while not happened():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def slurm_conf(root: Path, host: str, hardware: str, socket_path: Path, ctld_port: int, slurmd_port: int) -> str:
    # A node that reports less memory than declared is drained: declare 90 % of it.
    hardware = re.sub(r"RealMemory=(\d+)", lambda m: f"RealMemory={int(m[1]) * 9 // 10}", hardware)
    return "\n".join([
        "ClusterName=tests", f"SlurmctldHost={host}(127.0.0.1)", "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={socket_path}", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={ctld_port}", f"SlurmdPort={slurmd_port}",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/log/slurmctld.pid", f"SlurmdPidFile={root}/log/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log", f"SlurmdLogFile={root}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",  # no cgroups needed
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill", "SchedulerParameters=batch_sched_delay=0",
        "ReturnToService=2", "EnforcePartLimits=ALL", "MpiDefault=none", "SwitchType=switch/none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt", f"JobCompLoc={root}/log/jobcomp.txt", "MailProg=/bin/true",
        "SlurmctldTimeout=30", "SlurmdTimeout=30", "InactiveLimit=0", "MinJobAge=300", "KillWait=30", "Waittime=0",
        f"NodeName={host} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN",
        f"PartitionName=tests Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


def start(root: Path) -> Cluster:
    """A cluster whose node is idle; raises Unavailable (after stopping what it started) if it cannot be had."""
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if missing:
        raise Unavailable(f"{', '.join(missing)} not installed (Debian: apt-get install --no-install-recommends "
                          "slurm-wlm munge; .ci/run installs them)")
    if os.geteuid() != 0:
        raise Unavailable("the daemons run as root here, and these tests do not")
    for sub in ("munge", "mungerun", "state", "spool", "log"):
        (root / sub).mkdir(parents=True)
    # munged refuses a socket whose folders are not all executable by others; pytest's tmp folders are 700.
    for folder in [*reversed((root / "mungerun").parents), root / "mungerun"]:
        if folder.stat().st_mode & 0o001 == 0:
            folder.chmod(folder.stat().st_mode | 0o111)
    (root / "munge").chmod(0o700)
    key, socket_path = root / "munge" / "munge.key", root / "mungerun" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    cluster = Cluster(root, {"SLURM_CONF": str(root / "slurm.conf")})
    try:
        subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True, timeout=60)
        munge_pid = root / "mungerun" / "munged.pid"
        subprocess.run(["munged", "-S", str(socket_path), f"--key-file={key}", f"--log-file={root}/log/munged.log",
                        f"--pid-file={munge_pid}", f"--seed-file={root}/munge/munged.seed"],  # forks itself
                       check=True, capture_output=True, timeout=60)
        if not _wait(lambda: munge_pid.is_file() and munge_pid.read_text().strip() and socket_path.exists(), START_S):
            raise Unavailable(f"munged did not start:\n{cluster.logs()}")
        cluster.procs["munged"] = int(munge_pid.read_text())
        hardware = subprocess.run(["slurmd", "-C"], check=True, capture_output=True, text=True, timeout=60)
        line = hardware.stdout.splitlines()[0]
        (root / "slurm.conf").write_text(slurm_conf(root, host, line.partition(" ")[2], socket_path, free_port(),
                                                    free_port()))
        daemons = []
        for daemon in (["slurmctld", "-D"], ["slurmd", "-D", "-N", host]):
            with open(root / "log" / f"{daemon[0]}.out", "w") as out:
                daemons.append(subprocess.Popen([*daemon, "-f", str(root / "slurm.conf")], stdin=subprocess.DEVNULL,
                                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            cluster.procs[daemon[0]] = daemons[-1].pid
        idle = lambda: "idle" in cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).split()  # noqa: E731
        # a daemon that exited (a port taken meanwhile, say) never makes the node idle: no use waiting for it
        if not _wait(lambda: idle() or any(proc.poll() is not None for proc in daemons), START_S) or not idle():
            raise Unavailable(f"the node was not idle within {START_S} s of the daemons' start, or one of them "
                              f"exited:\n{cluster.logs()}")
    except (Unavailable, subprocess.SubprocessError, OSError) as err:
        stop(cluster)
        raise Unavailable(str(err) if isinstance(err, Unavailable) else f"{err}\n{cluster.logs()}") from None
    return cluster


def stop(cluster: Cluster) -> None:
    """Cancel every job, then stop the daemons, slurmd first, by their PIDs (SIGKILL if SIGTERM is not enough)."""
    if "slurmctld" in cluster.procs and os.path.exists(cluster.env["SLURM_CONF"]):
        cluster.run("scancel", "--user=root", check=False)
        _wait(lambda: not cluster.run("squeue", "-h", check=False).strip(), STOP_S)
    for name in ("slurmd", "slurmctld", "munged"):
        pid = cluster.procs.pop(name, None)
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        if not _wait(lambda: not _alive(pid) or _reap(pid), STOP_S):
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: not _alive(pid) or _reap(pid), STOP_S)


def _reap(pid: int) -> bool:
    """True once our child ``pid`` has ended (and is reaped); False for a process that is not our child."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return False
