"""pipeline/spreadsheet.py: Excel-safe CSV bytes, read back with the csv module."""

from __future__ import annotations

import csv
import hashlib

import pytest

from pipeline.spreadsheet import (
    excel_csv_bytes, guard_cell, sha256_bytes, sha256_file, unguard_cell, write_atomically,
)

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("value, guarded", [
    ("=SUM(A1:A3)", "'=SUM(A1:A3)"),
    ("+44 1234", "'+44 1234"),
    ("-1", "'-1"),
    ("@cmd", "'@cmd"),
    ("\tindented", "'\tindented"),
    ("\rreturn", "'\rreturn"),
    ("LA01", "LA01"),
    ("a = b", "a = b"),
    ("", ""),
    (None, ""),
    (0.5, "0.5"),
    (-2, "'-2"),
])
def test_guard_cell(value, guarded):
    assert guard_cell(value) == guarded


@pytest.mark.parametrize("text", ["=SUM(A1)", "+1", "-x", "@me", "\tx", "plain", "'quoted", "it's", ""])
def test_unguard_undoes_guard(text):
    assert unguard_cell(guard_cell(text)) == text


def test_unguard_leaves_ordinary_apostrophes():
    assert unguard_cell("'tis") == "'tis"
    assert unguard_cell("'=x") == "=x"


HEADER = ["passage", "=note"]
ROWS = [
    ["=HYPERLINK(\"http://x\")", "x"],
    ["+1", "-2"],
    ["@me", "\tx"],
    ["plain, with comma", 3],
    [None, "say \"hi\""],
    ["café — ünïcode", ""],
]


def test_excel_csv_bytes_bom_crlf_and_guarded_cells(tmp_path):
    data = excel_csv_bytes(HEADER, ROWS)
    assert data.startswith(BOM)
    assert not data[3:].startswith(BOM)
    body = data[len(BOM):]
    assert body.endswith(b"\r\n")
    assert body.count(b"\r\n") == 1 + len(ROWS)
    assert body.replace(b"\r\n", b"").count(b"\n") == 0  # no bare line feeds

    path = tmp_path / "out.csv"
    path.write_bytes(data)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        read = list(csv.reader(handle))
    assert read == [
        ["passage", "'=note"],
        ["'=HYPERLINK(\"http://x\")", "x"],
        ["'+1", "'-2"],
        ["'@me", "'\tx"],
        ["plain, with comma", "3"],
        ["", "say \"hi\""],
        ["café — ünïcode", ""],
    ]
    originals = [[("" if v is None else str(v)) for v in row] for row in [HEADER, *ROWS]]
    assert [[unguard_cell(c) for c in row] for row in read] == originals


def test_excel_csv_bytes_keeps_line_breaks_inside_cells(tmp_path):
    data = excel_csv_bytes(["text"], [["first line\nsecond line"]])
    assert data == BOM + b'text\r\n"first line\nsecond line"\r\n'
    path = tmp_path / "out.csv"
    path.write_bytes(data)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        assert list(csv.reader(handle)) == [["text"], ["first line\nsecond line"]]


def test_header_only():
    assert excel_csv_bytes(["a", "b"], []) == BOM + b"a,b\r\n"


def test_write_atomically_leaves_no_temp_file(tmp_path):
    path = tmp_path / "reports" / "council" / "review.csv"
    write_atomically(path, b"first")
    assert path.read_bytes() == b"first"
    write_atomically(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["review.csv"]


def test_hashes():
    assert sha256_bytes(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_sha256_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_file(path) == hashlib.sha256(b"abc").hexdigest()
