"""Where output goes: results to stdout in one of four formats, everything else to stderr."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any, Iterable, TextIO

from rich.console import Console
from rich.table import Table

FORMATS = ("table", "jsonl", "json", "csv")

# Rich honours NO_COLOR and drops styling when the stream is not a terminal.
stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)  # log lines are not wrapped into a pipe


def default_format() -> str:
    """A table for people at a terminal, JSON lines for pipes and files."""
    return "table" if sys.stdout.isatty() else "jsonl"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def emit(rows: Iterable[dict], fmt: str, *, columns: list[str] | None = None,
         title: str | None = None, table_row=None, file: TextIO | None = None) -> None:
    """Write rows to stdout (or `file`, for jsonl); jsonl streams each row as soon as it arrives.

    `table_row` turns a record into the cells of the table view (for records with nested fields);
    by default a cell is the value's plain text.
    """
    if fmt == "jsonl":
        out = file or sys.stdout
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()  # a record is complete on disk when the next input starts: nothing lost on a kill
    elif fmt == "json":
        json.dump(list(rows), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    elif fmt == "csv":
        writer = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(sys.stdout, fieldnames=columns or list(row))
                writer.writeheader()
            writer.writerow({k: _cell(row.get(k)) for k in writer.fieldnames})
            sys.stdout.flush()
    elif fmt == "table":
        rows = list(rows)
        names = columns or (list(rows[0]) if rows else [])
        table = Table(title=title)
        for name in names:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(*(table_row(row) if table_row else [_cell(row.get(n)) for n in names]))
        stdout.print(table)
    else:
        raise ValueError(f"format should be one of {', '.join(FORMATS)}, got {fmt!r}")
