"""Printing: JSON for machines, aligned tables for people."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[index]) for line in cells)])
        for index, column in enumerate(columns)
    ]
    print("  ".join(column.upper().ljust(width) for column, width in zip(columns, widths,
                                                                        strict=True)))
    for line in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


def print_fields(record: dict[str, Any]) -> None:
    width = max(len(key) for key in record)
    for key, value in record.items():
        print(f"{key.ljust(width)}  {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return value.get("message") or json.dumps(value)
    return str(value)


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> None:
    """table for people, json or csv for machines."""
    if fmt == "json":
        print_json(list(rows))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    else:
        print_table(rows, columns)


def print_actions(actions: Sequence[dict[str, Any]]) -> None:
    for action in actions:
        print(f"{action['start_time']}  {action['action']:<14} "
              f"{action['result'] or 'Running':<8} {action['request_id']}  {action['user']}")
        for step in action["events"]:
            print(f"    {step['event']:<14} {step['result']:<8} {step['host'] or '-':<10}"
                  f" {step['details'] or ''}")


def note(message: str) -> None:
    """A remark for the person at the terminal; never mixed into the printed data."""
    print(f"shelf: {message}", file=sys.stderr)


def quarantined_note(count: int) -> None:
    note(f"{count} stored event(s) could not be projected and are left out (quarantined): "
         "see `shelf projections status`")


def progress(doing: str) -> Callable[[int, int], None] | None:
    """A line on stderr, rewritten after each batch, when a person is watching; else none."""
    if not sys.stderr.isatty():
        return None

    def show(position: int, head: int) -> None:
        end = "\n" if position >= head else ""
        print(f"\rshelf: {doing}: event {position:,} of {head:,}", end=end, file=sys.stderr,
              flush=True)

    return show


def print_step(record: dict[str, Any]) -> None:
    """One step an instance went through while `--wait` watched (`history`'s record)."""
    detail = record.get("error") or record.get("host") or ""
    print(f"  {record['timestamp'][11:19]}  {record['event']:<24} {detail}", flush=True)
