"""Line counts of the validation code, per file and part, for docs/decisions/pydantic.md.

`python docs/decisions/count_lines.py [FILE[:PART=NAME,NAME...] ...]`; with no arguments, today's files.
Per part: total lines (blank and comment lines included), lines that are not blank or comment-only
("sloc", docstrings included) and code lines (docstrings excluded too). A top-level statement belongs to the
part that names it; everything else (imports, constants) to "rest".
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

TODAY = {
    "stages/lib/schema.py": {
        "validation machinery": ["Range", "Choice", "param", "keys", "fields_of"],
        "declarations": ["Source", "DataParams", "LrRangeParams", "TrainParams", "ComputeParams", "ReportParams",
                         "LongRulesParams", "Arch", "EvidenceParams", "Params"],
    },
    "stages/plumbing/params.py": {
        "checker": ["ARCH_NAME", "SHA256", "CHOICES", "_Checker", "_SHORT", "shown", "escaped", "described",
                    "parse_params", "_simple", "_evidence", "_seeds", "_rates", "_sources", "_sha256", "_archs",
                    "_size_ok", "MAX_SHOWN"],
        "before any model (file, YAML, aliases, duplicates)": [
            "PARAMS_FILE", "MAX_BYTES", "MAX_NODES", "_yaml", "load_raw", "raw_from", "dump_raw", "_yaml_problem",
            "_expanded_size", "_duplicate_keys", "_plain", "load_params"],
    },
    "stages/ground/spec.py": {  # the mini-language, in stages/plumbing/records.py at 1934ec2
        "mini-language": ["Scalar", "Maybe", "ListOf", "MapOf", "OneOf", "ANY", "NUMBER", "POSITIVE", "INT",
                          "FRACTION", "NONNEGATIVE", "COUNT", "INDEX", "STR", "NULL", "PICK", "Wrong", "check",
                          "_check_scalar", "_check_mapping", "_join", "_short", "all_finite"],
    },
    "stages/plumbing/records.py": {
        "file reading (stays)": ["read_json", "read", "write_json", "read_csv", "damaged", "rebuild_command", "_row"],
    },
    "stages/lib/shapes.py": {},
}


def names_of(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)] + [
            e.id for t in node.targets if isinstance(t, ast.Tuple) for e in t.elts if isinstance(e, ast.Name)] + [
            t.value.id for t in node.targets if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def line_kinds(source: str) -> tuple[set[int], set[int]]:
    """The lines holding code tokens, and the lines that are only a docstring."""
    code, docs = set(), set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
                isinstance(body[0].value.value, str):
            docs.update(range(body[0].lineno, body[0].end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER,
            tokenize.ENCODING}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            code.update(range(tok.start[0], tok.end[0] + 1))
    return code, docs


def count(path: Path, parts: dict[str, list[str]]) -> dict[str, tuple[int, int, int]]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    code, docs = line_kinds(source)
    owner = {name: part for part, names in parts.items() for name in names}
    spans: dict[str, set[int]] = {}
    tree = ast.parse(source)
    body = tree.body
    for i, node in enumerate(body):
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        # blank and comment lines just before a statement belong to it
        end = node.end_lineno
        prev_end = body[i - 1].end_lineno if i else 0
        part = next((owner[n] for n in names_of(node) if n in owner), "rest")
        spans.setdefault(part, set()).update(range(prev_end + 1 if i else start, end + 1))
    last = body[-1].end_lineno if body else 0
    spans.setdefault("rest", set()).update(range(last + 1, len(lines) + 1))
    spans["rest"].update(range(1, body[0].lineno) if body else ())
    return {part: (len(span), len(span & code), len(span & code - docs)) for part, span in spans.items()}


def main(argv: list[str]) -> None:
    targets = {}
    for arg in argv:
        file, _, spec = arg.partition(":")
        targets[file] = {p.split("=")[0]: p.split("=")[1].split(",") for p in spec.split(";") if p} if spec else {}
    grand = [0, 0, 0]
    print(f"{'file / part':70} {'total':>6} {'sloc':>6} {'code':>6}")
    for file, parts in (targets or TODAY).items():
        result = count(Path(file), parts)
        total = [sum(v[k] for v in result.values()) for k in range(3)]
        print(f"{file:70} {total[0]:6} {total[1]:6} {total[2]:6}")
        for part, (t, s, c) in sorted(result.items()):
            print(f"  {part:68} {t:6} {s:6} {c:6}")
        grand = [g + t for g, t in zip(grand, total)]
    print(f"{'all':70} {grand[0]:6} {grand[1]:6} {grand[2]:6}")


if __name__ == "__main__":
    main(sys.argv[1:])
