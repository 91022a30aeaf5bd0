"""Compare the workspace with a git revision, as Markdown for a pull request.

Usage: python -m scripts.compare [REV]   (default: main; `make compare REV=...`)

Shows the changed metrics per arch, the changed params, and the report's results
table of both sides. Reads only committed files (metrics, params, report), so no
DVC cache is needed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from stages.ground.errors import StageError, UsageError, shown
from stages.lib.markdown import table
from stages.plumbing import paths
from stages.plumbing.cli import refuse, run
from stages.plumbing.params import MAX_BYTES, ParamsError, load_params, parse_params, raw_from

USAGE = "usage: python -m scripts.compare [REV]"
SHOWN_METRICS = ("test_accuracy", "test_loss", "val_accuracy", "params", "lr", "lr_chosen_by")


def metrics_rows(diff: dict) -> list[list[str]]:
    """Table rows from `dvc metrics diff --json`, per-arch metrics only."""
    rows = []
    for path, metrics in sorted(diff.items()):
        if Path(path).parent != paths.metrics_json("x").parent:
            continue
        arch = Path(path).stem
        for key in SHOWN_METRICS:
            if key not in metrics:
                continue
            change = metrics[key]
            delta = change.get("diff")
            delta_text = f"{delta:+.4g}" if isinstance(delta, (int, float)) else ""
            rows.append([arch, key, _cell(change.get("old")), _cell(change.get("new")), delta_text])
    return rows


def params_rows(diff: dict) -> list[list[str]]:
    """Table rows from `dvc params diff --json`."""
    return [[f"`{key}`", _cell(change.get("old")), _cell(change.get("new"))]
            for file_changes in diff.values() for key, change in sorted(file_changes.items())]


def results_table(markdown: str | None) -> str:
    if markdown is None:
        return "_no report at this revision_"
    section = markdown.split("## Results", 1)[-1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return "\n".join(lines) if lines else "_no results table_"


def render(rev: str, metrics_diff: dict, params_diff: dict, old_report: str | None, new_report: str | None) -> str:
    """The comparison, in Markdown.

    Args:
        rev: the git revision the workspace is compared with.
        metrics_diff, params_diff: `dvc metrics diff --json` and `dvc params diff --json` against it.
        old_report, new_report: reports/report.md at ``rev`` and in the workspace; None where there is none.
    """
    out = [f"# Workspace vs `{rev}`", "", "## Metrics that changed", ""]
    rows = metrics_rows(metrics_diff)
    out += table(["arch", "metric", rev, "workspace", "change"], "llrrr", rows) if rows else ["_none_"]
    out += ["", "## Params that changed", ""]
    rows = params_rows(params_diff)
    out += table(["param", rev, "workspace"], "lll", rows) if rows else ["_none_"]
    out += ["", f"## Results at `{rev}`", "", results_table(old_report),
            "", "## Results in the workspace", "", results_table(new_report)]
    return "\n".join(out) + "\n"


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _dvc_json(*args: str) -> dict:
    done = subprocess.run(["dvc", *args, "--json"], capture_output=True, text=True, encoding="utf-8")
    try:
        if done.returncode == 0:
            return json.loads(done.stdout or "{}")
    except ValueError:
        pass
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    why = next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else "no output")
    raise StageError(f"`dvc {' '.join(args)} --json` failed: {why}")


def _is_commit(rev: str) -> bool:
    return subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          capture_output=True).returncode == 0


def _report_at(rev: str) -> str | None:
    done = subprocess.run(["git", "show", f"{rev}:{paths.REPORT_MD}"], capture_output=True, text=True, encoding="utf-8")
    return done.stdout if done.returncode == 0 else None


def check_params_at(rev: str) -> None:
    """The branch's params.yaml, checked as the workspace's is: a compare against a file DVC cannot read would show
    every value as changed and exit 0."""
    name = f"{rev}:params.yaml"
    size = subprocess.run(["git", "cat-file", "-s", name], capture_output=True, text=True, encoding="utf-8")
    if size.returncode != 0:
        raise StageError(f"{rev} has no params.yaml: compare with a revision of this project")
    if int(size.stdout) > MAX_BYTES:  # not read at all
        raw_from(b" " * (MAX_BYTES + 1), name, fix=f"a fix on {rev}")
    data = subprocess.run(["git", "show", name], capture_output=True, check=True).stdout
    try:
        parse_params(raw_from(data, name, fix=f"a fix on {rev}"))
    except ParamsError as err:
        problems = [f"{name}: {line.removeprefix('params.yaml: ')}" if line.startswith("params.yaml: ") else line
                    for line in err.problems]
        raise ParamsError([f"{rev}'s params.yaml cannot be compared: fix it on {rev} first", *problems]) from None


def main(argv: list[str]) -> None:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        raise refuse(USAGE, argv)
    rev = argv[0] if argv else "main"
    if not _is_commit(rev):
        raise UsageError(f"{shown(rev)} is not a git branch, tag or commit here: {USAGE}")
    load_params()
    check_params_at(rev)
    new = paths.REPORT_MD.read_text(encoding="utf-8") if paths.REPORT_MD.exists() else None
    metrics, params = _dvc_json("metrics", "diff", rev), _dvc_json("params", "diff", rev)
    print(render(rev, metrics, params, _report_at(rev), new), end="")


if __name__ == "__main__":
    run(main, usage=USAGE)
