"""The batch summary: ``summary.csv`` and the table the terminal shows."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..provenance import write_text_atomic

#: Columns of ``summary.csv``, in order.
COLUMNS = ("name", "status", "seconds", "n_chips", "n_communities", "modalities", "resumed_from",
           "repaired", "problem", "where", "fix", "out")


def summary_csv(records: list[dict[str, Any]]) -> str:
    """The records as CSV text (:data:`COLUMNS`; missing values empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: record.get(k, "") for k in COLUMNS})
    return buffer.getvalue()


def write_summary(path: Path, records: list[dict[str, Any]]) -> None:
    """Write ``summary.csv`` atomically (a reader never sees half of it)."""
    write_text_atomic(Path(path), summary_csv(records))


def summary_table(records: list[dict[str, Any]]) -> Any:
    """A ``rich`` table of the records: name, status, time, communities, and what went wrong."""
    from rich.markup import escape
    from rich.table import Table

    done = sum(r["status"] in ("done", "skipped") for r in records)
    table = Table(title=f"{done} of {len(records)} specimens finished")
    for column in ("specimen", "status", "s", "communities", "problem / where"):
        table.add_column(column, overflow="fold")
    colour = {"done": "green", "skipped": "cyan", "failed": "bold red", "interrupted": "yellow"}
    for r in records:
        seconds = r.get("seconds")
        detail = f"{r.get('problem', '')} ({r.get('where', '')})" if r["status"] == "failed" else r.get("repaired", "")
        table.add_row(escape(r["name"]), f"[{colour.get(r['status'], 'white')}]{r['status']}[/]",
                      "" if seconds in (None, "") else f"{float(seconds):.1f}",
                      str(r.get("n_communities", "")), escape(detail or ""))
    return table
