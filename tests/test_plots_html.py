"""`make plots`: DVC's page with its Vega libraries loaded from dvc_plots/lib/ instead of a CDN."""

from __future__ import annotations

import io
import re
import tarfile

import pytest
from dvc_render.html import HTML
from dvc_render.vega import VegaRenderer

from scripts.plots_html import lib_name, minified_build, page_template, script_specs
from stages.ground.errors import StageError


def test_the_libraries_are_the_versions_dvc_loads():
    specs = script_specs(VegaRenderer.SCRIPTS)
    assert [name for name, _ in specs] == ["vega", "vega-lite", "vega-embed"]
    for name, version in specs:
        assert f"/npm/{name}@{version}\"" in VegaRenderer.SCRIPTS


def test_a_page_that_loads_other_libraries_names_the_fix():
    with pytest.raises(StageError, match="update SCRIPT_SPEC in scripts/plots_html.py"):
        script_specs('<script src="https://example.org/npm/vega@5.20.2"></script>')


def test_the_page_loads_the_libraries_from_lib_and_nothing_from_the_internet():
    specs = script_specs(VegaRenderer.SCRIPTS)
    page = HTML(page_template(specs)).with_element('<div id="plot"></div>').embed()  # as `dvc plots show` fills it
    assert re.findall(r'<script src="([^"]+)"', page) == [f"lib/{lib_name(name, version)}" for name, version in specs]
    assert '<div id="plot"></div>' in page
    assert "http" not in page


def npm_tarball(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_the_minified_build_is_read_from_the_package(tmp_path):
    tarball = npm_tarball(tmp_path / "vega-lite-5.2.0.tgz", {"package/build/vega-lite.min.js": b"var vl;",
                                                            "package/build/vega-lite.js": b"var vegaLite;"})
    assert minified_build(tarball, "vega-lite") == b"var vl;"


def test_a_package_without_a_minified_build_names_the_fix(tmp_path):
    tarball = npm_tarball(tmp_path / "vega-1.0.0.tgz", {"package/build/vega.js": b"var vega;"})
    with pytest.raises(StageError, match="has no package/build/vega.min.js: pick a version of vega that ships one"):
        minified_build(tarball, "vega")
