"""Markdown tables, as reports/report.md, reports/answer.md and `make compare` show them. Cells are not padded to
line up: a rerun's diff then shows only the rows whose numbers changed."""

from __future__ import annotations

from typing import Iterable


def table(header: list[str], align: str, rows: Iterable[list[str]]) -> list[str]:
    """A Markdown table, one line per row.

    Args:
        header: the column names.
        align: one letter per column, "l" (left) or "r" (right: numbers that line up).
        rows: the cells of each row, already formatted; a cell holding "|" must escape it (`\\|`).
    """
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]
