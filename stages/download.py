"""Stage download: MNIST's four IDX files into data/raw/, checksum-verified.

Sources are tried in the order params.yaml gives; the first whose files all
match their sha256 wins. Nothing partial is ever left in data/raw/.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from stages.ground.atomic import atomic_dir
from stages.ground.errors import StageError
from stages.lib.sources import SourceError, describe, fetch, verify
from stages.plumbing.cli import run
from stages.plumbing.params import load_params
from stages.plumbing.paths import RAW_DIR

OFFLINE_HELP = (
    "To work offline, put a local copy first in params.yaml, e.g.\n"
    "  data:\n    sources:\n      - local: /path/to/mnist.npz   # or a folder with the four IDX files (.gz is fine)"
)


def main(argv: list[str]) -> None:
    params = load_params()
    failures = []
    for source in params.data.sources:
        try:
            with atomic_dir(RAW_DIR) as staged, tempfile.TemporaryDirectory(dir=RAW_DIR.parent) as work:
                fetch(source, staged, Path(work))
                verify(staged, params.data.sha256)
        except SourceError as err:
            failures.append(f"  {describe(source)}: {err}")
            print(f"download: {describe(source)} failed: {err}")
            continue
        print(f"download: {RAW_DIR}/ from {describe(source)}, all sha256 verified")
        return
    raise StageError("could not get MNIST from any source:\n" + "\n".join(failures) + "\n" + OFFLINE_HELP)


if __name__ == "__main__":
    run(main)
