"""`make plots`: `dvc plots show` whose page works without DVC's CDN.

DVC's page loads vega, vega-lite and vega-embed from a CDN; where only package registries are reachable it stays
blank. This fetches the same versions with `npm pack` once into dvc_plots/lib/ (git-ignored, like the page) and
renders through a page template that loads them from there. Needs npm; with internet access, plain
`dvc plots show` does the same.

Usage: python -m scripts.plots_html [TARGET ...]   (plots files or plot ids; all plots by default)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from dvc_render.vega import VegaRenderer

from scripts.lanes import DVC
from stages.ground.atomic import write_bytes, write_text
from stages.ground.errors import StageError, UsageError, shown
from stages.plumbing.cli import run

USAGE = "usage: python -m scripts.plots_html [TARGET ...]"
OUT_DIR = Path("dvc_plots")
LIB_DIR = OUT_DIR / "lib"
TEMPLATE = OUT_DIR / "local_template.html"
SCRIPT_SPEC = re.compile(r"/npm/(vega(?:-lite|-embed)?)@([0-9][0-9.]*)\"")
MAX_SCRIPT_BYTES = 10_000_000  # a library's minified build is under 1 MB


def script_specs(scripts_html: str) -> list[tuple[str, str]]:
    """(package, version) of each library DVC's page loads, in its order (vega, vega-lite, vega-embed)."""
    specs = SCRIPT_SPEC.findall(scripts_html)
    if [name for name, _ in specs] != ["vega", "vega-lite", "vega-embed"]:
        raise StageError("DVC's page no longer loads vega, vega-lite and vega-embed as this script expects: "
                         "update SCRIPT_SPEC in scripts/plots_html.py to its installed dvc_render")
    return specs


def lib_name(name: str, version: str) -> str:
    return f"{name}-{version}.min.js"


def page_template(specs: list[tuple[str, str]]) -> str:
    """DVC's page with the libraries loaded from lib/ beside it; {plot_divs} is where DVC puts the plots."""
    tags = "\n".join(f'    <script src="lib/{lib_name(name, version)}"></script>' for name, version in specs)
    return f"""<!DOCTYPE html>
<html>
<head>
    <title>DVC Plot</title>
{tags}
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def minified_build(tarball: Path, name: str) -> bytes:
    """build/<name>.min.js from an npm package tarball."""
    member = f"package/build/{name}.min.js"
    with tarfile.open(tarball) as tar:
        try:
            info = tar.getmember(member)
        except KeyError:
            raise StageError(f"{tarball.name} has no {member}: pick a version of {name} that ships one") from None
        if not info.isfile() or info.size > MAX_SCRIPT_BYTES:
            raise StageError(f"{tarball.name}: {member} is not a file under {MAX_SCRIPT_BYTES} bytes")
        return tar.extractfile(info).read()


def fetch_missing(specs: list[tuple[str, str]]) -> None:
    """`npm pack` the libraries not yet in LIB_DIR and keep their minified builds there."""
    missing = [(name, version) for name, version in specs if not (LIB_DIR / lib_name(name, version)).is_file()]
    if not missing:
        return
    if shutil.which("npm") is None:
        raise StageError("npm not found: install Node.js's npm (apt-get install npm), or use `dvc plots show` "
                         "where the internet is reachable")
    with tempfile.TemporaryDirectory() as scratch:
        packed = subprocess.run(
            ["npm", "pack", "--silent", "--json", "--pack-destination", scratch,
             *(f"{name}@{version}" for name, version in missing)],
            capture_output=True, text=True, encoding="utf-8", check=False)
        if packed.returncode != 0:
            last = (packed.stderr.strip().splitlines() or ["no message"])[-1]
            raise StageError(f"npm pack failed ({last}): check that npm reaches its registry, then rerun")
        tarballs = {entry["name"]: Path(scratch) / entry["filename"] for entry in json.loads(packed.stdout)}
        for name, version in missing:
            write_bytes(LIB_DIR / lib_name(name, version), minified_build(tarballs[name], name))


def main(argv: list[str]) -> None:
    option = next((arg for arg in argv if arg.startswith("-")), None)
    if option is not None:
        raise UsageError(f"{USAGE} (got {shown(option)}): targets only; for DVC's own options run `dvc plots show`")
    specs = script_specs(VegaRenderer.SCRIPTS)
    fetch_missing(specs)
    write_text(TEMPLATE, page_template(specs))
    rendered = subprocess.run([*DVC, "plots", "show", "--html-template", str(TEMPLATE), "-o", str(OUT_DIR), "--",
                               *argv], check=False)
    if rendered.returncode != 0:
        raise StageError(f"`dvc plots show` failed (exit {rendered.returncode}): its message is above")


if __name__ == "__main__":
    run(main, usage=USAGE)
