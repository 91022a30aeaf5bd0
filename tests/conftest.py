"""Shared fixtures: tiny MNIST-format data made on the spot (tests never touch the network)."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from stages.lib.idx import encode_idx, sha256_bytes
from stages.lib.idx import IDX_FILES
from stages.lib.tf_runtime import PORTABLE_ENV

# Tests that import TensorFlow in-process get the stages' numerics and a quiet log.
os.environ.update(PORTABLE_ENV)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]


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


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(folder served, base URL) of an HTTP server on 127.0.0.1 for this test only."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
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
