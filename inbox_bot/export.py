"""CSV exports for operators, safe to open in a spreadsheet (threats row 18: CSV/formula injection).

Customer-controlled text (addresses, notes, subjects) can start with ``=``, ``+``, ``-``, ``@``, a TAB or a
CR, which a spreadsheet may run as a formula (``=HYPERLINK(...)``, DDE). Such cells get a leading ``'``
(OWASP "CSV Injection"); the ``csv`` module quotes the rest. defusedcsv misses a leading TAB, hence our own.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import IO, Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
REQUEST_COLUMNS = ("id", "email", "account_id", "state", "open_flag", "sla_due_at", "created_at", "note")


def csv_cell(value: Any) -> str:
    """One cell as text; a value a spreadsheet could read as a formula is prefixed with ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if isinstance(value, int | float):
        return text  # numbers are ours (ids), never customer text; "-3" stays a number
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def write_csv(rows: Iterable[dict], columns: Sequence[str], out: IO[str]) -> int:
    """Write ``rows`` (only ``columns``, in that order) with a header line; returns the number of rows."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
        n += 1
    return n
