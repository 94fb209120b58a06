"""How the admin commands print rows: one JSON array, or an aligned table."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TextIO


def write_table(rows: list[dict[str, Any]], columns: list[str], out: TextIO) -> None:
    """Write ``columns`` of ``rows`` as a table under upper-case headings, columns aligned."""
    table = [[c.upper() for c in columns], *[[str(r[c]) for c in columns] for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def print_rows(
    rows: list[dict[str, Any]],
    columns: list[str],
    out: TextIO,
    *,
    as_json: bool,
    empty: str,
    for_table: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Print rows as one JSON array (every field) or as a table of ``columns``.

    Args:
        rows: The rows, JSON-friendly.
        columns: The table's columns (keys of the rows, after ``for_table``).
        out: Where to write.
        as_json: Write the JSON array instead of the table.
        empty: The line written instead of an empty table.
        for_table: Adds or shortens a row's table-only fields, in place.

    Returns:
        0, the command's exit status.
    """
    if as_json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return 0
    if not rows:
        out.write(f"{empty}\n")
        return 0
    if for_table is not None:
        for row in rows:
            for_table(row)
    write_table(rows, columns, out)
    return 0
