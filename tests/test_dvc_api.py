"""The private DVC API scripts/lanes.py, scripts/worker.py and scripts/prune.py lean on, pinned by name and
signature: there is no public `dvc repro -j` (treeverse/dvc#755 open, PR #10922 closed), so lanes plans with DVC's
own functions. An upgrade of DVC that moves them fails here first, saying what to adapt, not in the middle of
`make repro`."""

from __future__ import annotations

import inspect

import pytest

ADAPT = ("DVC {version} changed {name}: adapt the script that calls it (`grep -rn {function} scripts/`) to it, or "
         "keep dvc pinned at 3.67.1 (requirements/)")
# name -> the parameters lanes and the worker pass, in order
PINNED = {
    "dvc.repo.reproduce.collect_stages": ["repo", "targets", "recursive", "glob"],
    "dvc.repo.reproduce.get_active_graph": ["graph"],
    "dvc.repo.reproduce.plan_repro": ["graph", "stages", "pipeline", "downstream"],
    # the aggregator: a stage's run-cache key, to read what the remote's run cache holds of it
    "dvc.stage.cache._can_hash": ["stage"],
    "dvc.stage.cache._get_stage_hash": ["stage"],
    # make prune: drops a removed stage's lock entry, writing the lock as DVC's own lock writes do
    "dvc.utils.serialize.modify_yaml": ["path", "fs"],
}


@pytest.mark.parametrize("name", PINNED)
def test_the_private_dvc_functions_lanes_uses_are_there_as_lanes_calls_them(name):
    import dvc

    module, _, function = name.rpartition(".")
    found = getattr(__import__(module, fromlist=[function]), function, None)
    adapt = ADAPT.format(version=dvc.__version__, name=name, function=function)
    assert found is not None, adapt
    assert list(inspect.signature(found).parameters) == PINNED[name], adapt


def test_what_lanes_reads_of_a_stage_and_the_repo():
    """Stage.addressing and Stage.changed() name and judge a stage; Repo.index.graph and Repo.lock plan and guard."""
    from dvc.repo import Repo
    from dvc.repo.index import Index
    from dvc.stage import Stage

    assert isinstance(inspect.getattr_static(Stage, "addressing"), property) and callable(Stage.changed)
    assert inspect.getattr_static(Index, "graph", None) is not None
    assert "self.lock = " in inspect.getsource(Repo.__init__)


def test_what_lanes_and_the_aggregator_read_of_an_output_and_the_remote():
    """An output's recorded hash, folder, persist flag and cache (lanes: a user's files in a folder output); the
    default remote's file system and object paths (the aggregator: damaged objects)."""
    from dvc.data_cloud import DataCloud
    from dvc.output import Output

    assert "persist" in inspect.signature(Output.__init__).parameters
    assert isinstance(inspect.getattr_static(Output, "cache"), property)
    assert all(f"self.{name} = " in inspect.getsource(Output.__init__) for name in ("hash_info", "fs_path", "persist"))
    assert list(inspect.signature(DataCloud.get_remote).parameters)[:2] == ["self", "name"]
    assert list(inspect.signature(DataCloud.get_remote_odb).parameters)[:2] == ["self", "name"]
