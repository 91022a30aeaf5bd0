"""The fixtures, built on tests/harness.py: tiny data, a stage project, tiny models, and servers on 127.0.0.1."""

# First, as in every stage process: importing stages caps numpy's SIMD kernels, which only works before numpy loads.
import stages  # noqa: F401, I001
import copy
import functools
import http.server
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from harness import (
    ARCH,
    HIDDEN,
    PROXY_VARS,
    SEED,
    Project,
    stage_env,
    tiny_mnist,
    tiny_params,
    write_idx_folder,
)

from stages.lib.schema import Arch
from stages.lib.tf_runtime import PORTABLE_ENV
from stages.plumbing.params import parse_params

# Tests that import TensorFlow in-process get the stages' numerics and a quiet log.
os.environ.update(PORTABLE_ENV)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The modules of long dvc, make, SLURM and SSH runs on tiny projects, longest first: in `make test` (2 cores, this
# machine) each kept one xdist worker busy for minutes.
LONGEST_MODULES = ("test_pipeline", "test_slurm", "test_evidence_pipeline", "test_workers", "test_faults")


def pytest_collection_modifyitems(items):
    """The longest modules first, then the others in their usual order. `make test` hands whole modules to its
    workers in this order (--dist loadscope --no-loadscope-reorder): none of these starts last beside an idle one."""
    rank = {name: i for i, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


@pytest.fixture
def tiny_arrays() -> dict[str, np.ndarray]:
    return tiny_mnist()


@pytest.fixture
def idx_folder(tmp_path, tiny_arrays) -> tuple[Path, dict[str, str]]:
    """A folder with tiny IDX files and their sums."""
    folder = tmp_path / "mnist"
    return folder, write_idx_folder(folder, tiny_arrays)


@pytest.fixture
def project(tmp_path) -> Project:
    """The stage project: a folder with a valid params.yaml (the tests' own, with tiny data and one tiny arch)
    and nothing else, whose stages run as `python -m` runs them with this repository's code."""
    source = tmp_path / "mnist"
    params = tiny_params(source, write_idx_folder(source, tiny_mnist(seed=0)))
    parse_params(copy.deepcopy(params))  # the starting point is valid
    root = tmp_path / "project"
    root.mkdir()
    proj = Project(root, stage_env(tmp_path), params, source)
    proj.write_params()
    return proj


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[int, Path]:
    """Real .keras files of the stage project's arch, as train writes them, for seeds 42 and 43.

    Built once per module in this process (the only TensorFlow import there); evaluate reads them
    with numpy, so a test that uses them starts no TensorFlow.
    """
    from stages.lib import keras_model

    folder = tmp_path_factory.mktemp("models")
    files = {}
    for seed in (SEED, SEED + 1):
        files[seed] = folder / f"seed-{seed}.keras"
        keras_model.save_model(keras_model.build_model(Arch(ARCH, HIDDEN), seed), files[seed])
    return files


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
