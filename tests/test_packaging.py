"""pyproject.toml declares exactly what the code imports: `pip install .` gives a working install."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys

from harness import ROOT

# Declared but never imported, each for a reason.
NOT_IMPORTED = {
    "dvc-ssh": "DVC's ssh:// remotes, which DVC loads (scripts/worker.py)",
    "tensorboard": "what keras.callbacks.TensorBoard writes with",
}
CODE = ("stages", "scripts", "bench")


def declared() -> set[str]:
    """Distribution names in [project] dependencies (markers and pins dropped)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    return {normalize(re.match(r"[A-Za-z0-9_.-]+", item).group(0)) for item in re.findall(r'"([^"]+)"', block)}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> set[str]:
    """Modules the code imports from outside the standard library and itself, anywhere in a file."""
    names = set()
    for folder in CODE:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names.add(node.module)
    return {name for name in names if name.split(".")[0] not in {*sys.stdlib_module_names, *CODE}}


def distribution(module: str, providers: dict[str, list[str]]) -> str:
    """The distribution that provides ``module``; in a namespace package (ruamel), the one named after it."""
    parts = module.split(".")
    dists = providers.get(parts[0], [parts[0]])
    prefixes = {normalize(".".join(parts[:i])) for i in range(1, len(parts) + 1)}
    named = [dist for dist in dists if normalize(dist) in prefixes]
    return normalize(named[-1] if named else dists[0])


def test_every_imported_package_is_declared_and_every_declared_one_is_used():
    providers = importlib.metadata.packages_distributions()
    needed = {distribution(module, providers) for module in imported_modules()}
    needed = {"tensorflow-cpu" if name == "tensorflow" else name for name in needed}  # the CPU build provides it
    assert needed - declared() == set(), "imported but not in pyproject.toml's dependencies"
    assert declared() - needed == set(NOT_IMPORTED), "declared but never imported (and not listed as such)"


def test_installing_the_project_puts_no_package_of_its_own_in_site_packages():
    """`pip install .` would otherwise add top-level `stages`, `scripts` and `bench`, names anyone may use."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r"^\[tool\.setuptools\]\npackages = \[\]$", text, re.M)
    assert "[tool.setuptools.packages" not in text
