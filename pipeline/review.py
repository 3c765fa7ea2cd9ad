"""Review CSVs: export one row per respondent passage, and read back a reviewer's corrections."""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import re
from dataclasses import dataclass

from pipeline.errors import ReviewFileError, TranscriptError
from pipeline.ingest import decode_text
from pipeline.schemas import Codebook, CodedPassage
from pipeline.spreadsheet import sha256_bytes, unguard_cell

REVIEW_COLUMNS = ("passage_id", "council", "interview_id", "respondent_role", "round", "question", "text",
                  "suggested", "why", "codes", "code_labels", "reviewed", "reviewer", "note", "export_id")
CODE_SEPARATOR = "; "
PASSAGE_ID_SHAPE = re.compile(r"p[0-9a-f]{15}")  # pipeline.segment.passage_id


SUGGESTIONS_SHOWN = 5


def format_suggestions(scores: dict[str, float], limit: int = SUGGESTIONS_SHOWN) -> str:
    """``LA01=0.82; BR03=0.55``: the ``limit`` strongest scores, strongest first.

    Examples
    --------
    >>> format_suggestions({"BR03": 0.551, "LA01": 0.82})
    'LA01=0.82; BR03=0.55'
    """
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return CODE_SEPARATOR.join(f"{code}={score:.2f}" for code, score in ordered)


@dataclass(frozen=True)
class ExportedRow:
    """What an export showed a reviewer for one passage: the baseline their edits are measured against."""

    codes: tuple[str, ...]
    note: str
    reviewed: bool


@dataclass(frozen=True)
class ReviewExport:
    """One review file's content as exported: its id (written on every row) and each passage's baseline."""

    export_id: str
    council: str
    rows: dict[str, ExportedRow]


def review_export(council: str, passages: list[CodedPassage]) -> ReviewExport:
    """The export record of one council's review file.

    The id is a digest of what the reviewer is shown to decide on (passage ids,
    codes, notes, reviewed marks), so re-exporting unchanged content gives the
    same id and the same file bytes. The ``rx-`` prefix keeps Excel from reading
    an id such as ``1e5...`` as a number.
    """
    rows = {p.passage_id: ExportedRow(tuple(p.codes), p.note, p.gold is not None) for p in passages}
    content = json.dumps([council, sorted((pid, list(r.codes), r.note, r.reviewed) for pid, r in rows.items())])
    return ReviewExport("rx-" + hashlib.sha256(content.encode()).hexdigest()[:12], council, rows)


def review_rows(passages: list[CodedPassage], codebook: Codebook, export_id: str = "") -> list[list[str]]:
    """Rows in REVIEW_COLUMNS order, in the order given; reviewed passages show the reviewer's codes."""
    labels = {c.id: c.label for c in codebook.codes}
    rows = []
    for p in passages:
        rows.append([
            p.passage_id, p.council, p.interview_id, p.respondent_role, p.round, p.question or "", p.text,
            format_suggestions(p.scores), p.why,
            CODE_SEPARATOR.join(p.codes),
            CODE_SEPARATOR.join(labels.get(c, c) for c in p.codes),
            "yes" if p.gold is not None else "", p.reviewer, p.note, export_id,
        ])
    return rows


# Import --------------------------------------------------------------------

REVIEWED_WORDS = {"yes", "y", "x", "true", "1"}
_CODE_SPLIT = re.compile(r"[;,\s]+")


@dataclass(frozen=True)
class ReviewRow:
    """One row of a reviewer's file, cleaned of what spreadsheets add."""

    row: int
    passage_id: str
    codes: tuple[str, ...]
    marked_reviewed: bool
    reviewer: str
    note: str
    text: str | None
    council: str | None = None
    export_id: str = ""


@dataclass(frozen=True)
class ReviewFile:
    name: str
    sha256: str
    rows: tuple[ReviewRow, ...]


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    return max(counts, key=counts.get) if any(counts.values()) else ","


_ID_PARTS = re.compile(r"([A-Z]+)0*(\d+)")


def _id_key(value: str) -> tuple[str, int] | None:
    """``LA1`` and ``LA001`` both name ``LA01``: letters and the number, leading zeros ignored."""
    match = _ID_PARTS.fullmatch(value)
    return (match.group(1), int(match.group(2))) if match else None


def _nearest_ids(value: str, valid_ids) -> str:
    """Up to three ids: one naming the same number first (``LA1`` -> LA01), then the most similar, ties by id."""
    wanted = value.upper()
    key = _id_key(wanted)

    def similarity(code: str) -> float:
        return difflib.SequenceMatcher(None, code, wanted).ratio()

    candidates = [c for c in valid_ids if (key is not None and _id_key(c) == key) or similarity(c) >= 0.5]
    close = sorted(candidates, key=lambda c: (key is None or _id_key(c) != key, -similarity(c), c))[:3]
    return ", ".join(close) if close else "none close"


RETYPE = "retype that cell in the spreadsheet and save as CSV again (in a text editor, write a quote inside a cell as \"\")"


def _read_records(text: str, delimiter: str, name: str) -> list[list[str]]:
    """Every record of the file, header first; a quote that breaks the file's structure rejects it naming the row.

    Spreadsheets always write well-formed CSV, so strict parsing only refuses
    what a text editor or a broken tool did: an opening quote that never closes
    (it would swallow the rest of the file) or closes inside a cell.
    """
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    records: list[list[str]] = []
    try:
        for values in reader:
            records.append(values)
    except csv.Error as exc:
        row, line = len(records) + 1, reader.line_num
        if "field larger than field limit" in str(exc):
            problem = (f"a cell is longer than {csv.field_size_limit()} characters (it runs to line {line} of the file): "
                       "usually a quote (\") that opens a cell and never closes, or a document pasted into a cell; "
                       f"shorten or {RETYPE}")
        elif "unexpected end of data" in str(exc):
            problem = (f"a quote (\") opens a cell and never closes, so every line after it (to line {line}) would be "
                       f"read into that cell; {RETYPE}")
        else:
            problem = (f"a quote (\") opened in a cell closes in the middle of a later cell (line {line} of the file), "
                       f"so the rows in between cannot be read; {RETYPE}")
        raise ReviewFileError(name, [f"row {row}: {problem}"]) from None
    return records


def _damaged_row(values: list[str], header: list[str], delimiter: str) -> str | None:
    """Why a parsed row cannot be what a spreadsheet wrote, or None.

    A quote that opens a cell and happens to close at the end of a later cell
    parses cleanly but swallows the rows in between: their lines, each starting
    with its passage id as a cell, sit inside the cell. Cells beyond the header never come
    from a spreadsheet either (it writes a header cell for every column it saves).
    """
    if len(values) > len(header) and any(v.strip() for v in values[len(header):]):
        return (f"has {len(values)} cells but the header has {len(header)}; a quote (\") or a delimiter typed into a "
                "cell probably split it; fix the row in the spreadsheet and save as CSV again")
    d = re.escape(delimiter)
    # A swallowed row keeps its passage id as a cell of its own: between delimiters, or at a line's start or end.
    id_cell = re.compile(rf"(?:^|{d})\s*{PASSAGE_ID_SHAPE.pattern}\s*(?:{d}|$)", re.MULTILINE)
    for value in values:
        lines = value.split("\n")
        swallowed = sum(1 for line in lines[1:] if id_cell.search(line.rstrip("\r")))
        if swallowed:
            return (f"a cell holds what look like {swallowed} more rows (lines with a passage id): a quote (\") "
                    f"opened in it closed only at the end of a later row; {RETYPE}")
    return None


def parse_review_csv(data: bytes, name: str, valid_ids) -> ReviewFile:
    """Parse a review CSV as a spreadsheet saved it, or raise ReviewFileError listing every problem.

    Accepts UTF-8 with or without BOM and Windows-1252, comma, semicolon or tab
    delimiters, CRLF, reordered or extra columns, code ids in any case separated
    by ``;``, ``,`` or spaces, trailing spaces and the formula guard added on export.

    Examples
    --------
    >>> f = parse_review_csv(b"passage_id;codes;reviewed\\r\\np1;la01, br03 ;x\\r\\n", "r.csv", ["LA01", "BR03"])
    >>> f.rows[0].codes, f.rows[0].marked_reviewed
    (('LA01', 'BR03'), True)
    """
    if b"\x00" in data:
        raise ReviewFileError(name, ["is not a text file (binary data, or UTF-16 text); in the spreadsheet use "
                                     "Save As and choose CSV UTF-8 (or CSV), then import that file"])
    try:
        text = decode_text(data, name)
    except TranscriptError as exc:
        raise ReviewFileError(name, [exc.reason]) from None
    delimiter = _sniff_delimiter(text.split("\n", 1)[0])
    records = _read_records(text, delimiter, name)
    if not records:
        raise ReviewFileError(name, ["the file is empty; send back the review.csv qcode exported"])
    header = [unguard_cell(h.strip()).strip().lower() for h in records[0]]
    if "passage_id" not in header:
        raise ReviewFileError(name, [f"there is no 'passage_id' column (found: {', '.join(h for h in header if h) or 'none'}); "
                                     "keep the passage_id column of the exported review.csv"])
    if "codes" not in header:
        raise ReviewFileError(name, ["there is no 'codes' column; keep the codes column of the exported review.csv"])
    column = {h: i for i, h in reversed(list(enumerate(header)))}
    valid = set(valid_ids)

    def cell(values: list[str], key: str) -> str | None:
        i = column.get(key)
        if i is None:
            return None
        return unguard_cell(values[i].strip()).strip() if i < len(values) else ""

    rows: list[ReviewRow] = []
    problems: list[str] = []
    first_row: dict[str, int] = {}
    for row_number, values in enumerate(records[1:], start=2):  # spreadsheet rows: a multi-line cell is one row
        if not any(v.strip() for v in values):
            continue
        damage = _damaged_row(values, header, delimiter)
        if damage:
            problems.append(f"row {row_number}: {damage}")
            continue
        passage_id = cell(values, "passage_id")
        if not passage_id:
            problems.append(f"row {row_number}: passage_id is empty; restore it from the exported file or delete the row")
            continue
        if passage_id in first_row:
            problems.append(f"row {row_number}: passage_id {passage_id} also appears in row {first_row[passage_id]}; "
                            "keep one row per passage")
            continue
        first_row[passage_id] = row_number
        codes = []
        for token in _CODE_SPLIT.split(cell(values, "codes") or ""):
            if not token:
                continue
            code = token.upper()
            if code not in valid:
                problems.append(f"row {row_number}: unknown code {token!r} (nearest valid ids: {_nearest_ids(token, valid)})")
            elif code not in codes:
                codes.append(code)
        rows.append(ReviewRow(
            row=row_number, passage_id=passage_id, codes=tuple(codes),
            marked_reviewed=(cell(values, "reviewed") or "").lower() in REVIEWED_WORDS,
            reviewer=cell(values, "reviewer") or "", note=cell(values, "note") or "",
            text=cell(values, "text"), council=cell(values, "council"), export_id=cell(values, "export_id") or "",
        ))
    if problems:
        raise ReviewFileError(name, problems)
    return ReviewFile(name=name, sha256=sha256_bytes(data), rows=tuple(rows))
