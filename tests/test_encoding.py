"""Every text the project's code reads or writes names its encoding: the locale's (Python's default) is not
always UTF-8, and report.md is not ASCII. An AST walk over stages/, scripts/ and bench/ finds each read_text,
write_text, open in text mode and text-mode subprocess call without one, so the class stays closed."""

from __future__ import annotations

import ast

import pytest
from harness import ROOT

CODE = sorted(path.relative_to(ROOT) for folder in ("stages", "scripts", "bench")
              for path in (ROOT / folder).rglob("*.py"))
SUBPROCESS = {"run", "Popen", "check_output"}


def keywords(call: ast.Call) -> set[str]:
    return {k.arg for k in call.keywords}


def text_mode_open(call: ast.Call) -> bool:
    """open(path) or open(path, "w"...) in text mode: the mode, where given as a literal, has no "b"."""
    mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
    return not (isinstance(mode, ast.Constant) and "b" in str(mode.value))


def unnamed(tree: ast.AST) -> list[int]:
    """Lines of calls that read or write text without naming an encoding."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or "encoding" in keywords(node):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        if name in ("read_text", "write_text") and isinstance(f, ast.Attribute) and (
                name == "read_text" or len(node.args) + len(node.keywords) >= 1):
            lines.append(node.lineno)
        elif name == "open" and isinstance(f, ast.Name) and text_mode_open(node):
            lines.append(node.lineno)
        elif name in SUBPROCESS and keywords(node) & {"text", "universal_newlines"}:
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", CODE, ids=str)
def test_every_text_read_and_write_names_its_encoding(path):
    assert unnamed(ast.parse((ROOT / path).read_text(encoding="utf-8"))) == [], path


def test_the_walk_finds_each_kind_of_call():
    code = ('p.read_text()\np.write_text("x")\nopen(f)\nopen(f, "w")\nopen(f, "rb")\nsubprocess.run(a, text=True)\n'
            'p.read_text(encoding="utf-8")\nsubprocess.run(a, text=True, encoding="utf-8")\nwrite_text(p, s)\n')
    assert unnamed(ast.parse(code)) == [1, 2, 3, 4, 6]
