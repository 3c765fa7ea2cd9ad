"""CSV files as reviewers' spreadsheets open them: Excel-safe writing in one place."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path
from typing import Iterable, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FORMULA_GUARD = "'"


def guard_cell(value: object) -> str:
    """Text that Excel shows as typed instead of running as a formula.

    Examples
    --------
    >>> guard_cell("=HYPERLINK(1)")
    "'=HYPERLINK(1)"
    >>> guard_cell("LA01")
    'LA01'
    """
    text = "" if value is None else str(value)
    return FORMULA_GUARD + text if text.startswith(FORMULA_STARTS) else text


def unguard_cell(text: str) -> str:
    """Undo :func:`guard_cell` on a value read back from a reviewer's file."""
    if text.startswith(FORMULA_GUARD) and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text


def excel_csv_bytes(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """UTF-8 with BOM (so Excel detects the encoding), CRLF line ends, every cell formula-guarded."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([guard_cell(h) for h in header])
    for row in rows:
        writer.writerow([guard_cell(v) for v in row])
    return b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
