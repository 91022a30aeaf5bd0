"""dvc.yaml's deps tell the truth: each stage lists every in-repo module it imports, directly or
through others, that can change its outputs, and nothing else. Otherwise `dvc repro` would
call a result up to date after a change that makes it stale.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from harness import CODE, ROOT, imported_modules, module_file, shaping_imports, untracked_modules

STAGE_MODULE = re.compile(r"python -m (stages(?:\.\w+)+)")
PIPELINES = ("dvc.yaml", "evidence/dvc.yaml")  # the quick study and the evidence


def stages() -> dict[str, tuple[str, set[str]]]:
    """Stage (`<pipeline file>:<name>`) -> (the module its cmd runs, the .py files among its deps). Every
    pipeline's commands run from the project root (the evidence's wdir), so its deps are paths from there."""
    out = {}
    for pipeline in PIPELINES:
        for name, stage in yaml.safe_load((ROOT / pipeline).read_text())["stages"].items():
            spec = stage.get("do", stage)
            match = STAGE_MODULE.search(spec["cmd"])
            assert match, f"{pipeline}:{name}: cmd {spec['cmd']!r} does not run a stages module"
            out[f"{pipeline}:{name}"] = (match.group(1), {dep for dep in spec.get("deps", []) if dep.endswith(".py")})
    return out


def test_every_pipeline_is_read():
    assert {stage.partition(":")[0] for stage in stages()} == set(PIPELINES)
    assert f"{PIPELINES[1]}:long_rules" in stages() and stages()[f"{PIPELINES[1]}:long_rules"][0] == (
        "stages.evidence.long_rules")


@pytest.mark.parametrize("stage", stages())
def test_deps_are_exactly_the_modules_that_shape_the_stage(stage):
    module, deps = stages()[stage]
    imported = shaping_imports(module_file(module))
    missing, extra = sorted(imported - deps), sorted(deps - imported)
    assert not missing, f"{stage} imports {missing}, which dvc.yaml does not list as deps"
    assert not extra, f"{stage} lists {extra} as deps but does not import them"


def test_the_walk_sees_imports_inside_functions_and_from_packages():
    # an evidence stage reaches the training code through a sibling module of its package
    assert "stages/lib/keras_model.py" in shaping_imports(Path("stages/evidence/grid.py"))
    # train imports keras_model only once params are good, through tf_runtime
    train = shaping_imports(Path("stages/train.py"))
    assert {"stages/lib/tf_runtime.py", "stages/lib/keras_model.py", "stages/lib/schema.py"} <= train
    assert "stages/plumbing/paths.py" not in train  # `from stages.plumbing import machine, paths`: seen, and left out
    assert "stages/ground/errors.py" not in train  # the ground floor too


def test_every_untracked_module_is_imported_by_some_stage():
    imported = set()
    for module, _ in stages().values():
        imported |= {p.as_posix() for p in imported_modules(module_file(module))}
        imported |= {p.as_posix() for dep in shaping_imports(module_file(module)) for p in imported_modules(Path(dep))}
    assert len(untracked_modules()) >= 9
    for path in untracked_modules():
        assert path in imported, f"{path} is in stages/ground/ or stages/plumbing/ but no stage imports it"


def test_every_module_of_stages_lib_is_a_dep_of_some_stage():
    """The other side of the boundary: stages/lib/ holds only what changes results."""
    deps = set().union(*(deps for _, deps in stages().values()))
    lib = {path.relative_to(ROOT).as_posix() for path in (ROOT / "stages" / "lib").glob("*.py")
           if path.stem != "__init__"}
    assert lib - deps == set(), "in stages/lib/ but no stage lists it: plumbing belongs in stages/plumbing/"


# The floors of the code, bottom up (docs/layout.md): a module imports from its own floor or those below it, never
# from one above. Stage modules (stages/*.py, stages/evidence/*.py) are the floor "stages".
FLOORS = ("stages/ground", "stages/lib", "stages/plumbing", "stages", "scripts", "bench")


def floor(path: Path) -> int:
    """The index in FLOORS of the deepest floor holding ``path``."""
    folder = path.parent.as_posix()
    return FLOORS.index(max((name for name in FLOORS if folder == name or folder.startswith(name + "/")), key=len))


def upward(arrows: set[tuple[Path, Path]]) -> list[str]:
    """The imports (importer, imported) that run from a lower floor to a higher one."""
    return sorted(f"{a} ({FLOORS[floor(a)]}) imports {b} ({FLOORS[floor(b)]}), a floor above it"
                  for a, b in arrows if floor(b) > floor(a))


def code_arrows() -> set[tuple[Path, Path]]:
    files = [path.relative_to(ROOT) for package in CODE for path in (ROOT / package).rglob("*.py")]
    return {(path, target) for path in files for target in imported_modules(path) if target != path}


def test_no_import_runs_up_a_floor():
    arrows = code_arrows()
    assert len(arrows) > 200  # the walk sees the code
    assert upward(arrows) == [], "move the code down a floor, or pass the value in (docs/layout.md)"


def test_an_upward_import_is_seen():
    lib, paths = Path("stages/lib/data.py"), Path("stages/plumbing/paths.py")
    assert upward({(paths, lib)}) == []
    assert upward({(lib, paths)}) == [
        "stages/lib/data.py (stages/lib) imports stages/plumbing/paths.py (stages/plumbing), a floor above it"]
    assert floor(Path("stages/evidence/long.py")) == FLOORS.index("stages")
