"""pipeline/review.py: reading back review CSVs as Excel and LibreOffice save them."""

from __future__ import annotations

import csv
import io

import pytest

from pipeline.errors import ReviewFileError
from pipeline.review import REVIEW_COLUMNS, format_suggestions, parse_review_csv, review_rows
from pipeline.schemas import CodedPassage
from pipeline.spreadsheet import excel_csv_bytes, guard_cell, sha256_bytes

BOM = b"\xef\xbb\xbf"
IDS = ("LA01", "LA02", "LA10", "BR03")


def csv_bytes(rows, *, delimiter=",", encoding="utf-8", bom=False, newline="\r\n") -> bytes:
    """Bytes as a spreadsheet saves them: a chosen delimiter, encoding, line ending and optional BOM."""
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator=newline).writerows(rows)
    return (BOM if bom else b"") + buffer.getvalue().encode(encoding)


def rejection(data: bytes, valid=IDS, name="review.csv") -> ReviewFileError:
    with pytest.raises(ReviewFileError) as caught:
        parse_review_csv(data, name, valid)
    assert caught.value.name == name
    return caught.value


def message(name: str, problems: list[str]) -> str:
    listing = "\n  - ".join(problems)
    return f"{name} was rejected and nothing from it was applied; fix these and import it again:\n  - {listing}"


# accepted files ------------------------------------------------------------

def test_utf8_with_bom_comma_crlf(tmp_path):
    path = tmp_path / "review.csv"
    path.write_bytes(csv_bytes([
        ["passage_id", "codes", "reviewed", "reviewer", "note"],
        ["p1", "LA01; BR03", "yes", "Ana", "fine"],
        ["p2", "", "", "", ""],
    ], bom=True))
    data = path.read_bytes()
    assert data.startswith(BOM) and b"\r\n" in data
    review = parse_review_csv(data, "review.csv", IDS)
    assert review.name == "review.csv"
    assert review.sha256 == sha256_bytes(data)
    first, second = review.rows
    # The BOM is not glued to the first header: passage_id was found and read.
    assert (first.row, first.passage_id, first.codes, first.marked_reviewed, first.reviewer, first.note) == \
        (2, "p1", ("LA01", "BR03"), True, "Ana", "fine")
    assert (second.row, second.passage_id, second.codes, second.marked_reviewed) == (3, "p2", (), False)
    # no text column in the file: None, not ""
    assert first.text is None


def test_plain_utf8_with_accents_and_lf(tmp_path):
    path = tmp_path / "review.csv"
    path.write_bytes(csv_bytes([
        ["passage_id", "codes", "reviewer", "note", "text"],
        ["p1", "LA02", "Zoë", "café – réunion", "Ynys Môn"],
    ], newline="\n"))
    (row,) = parse_review_csv(path.read_bytes(), "review.csv", IDS).rows
    assert (row.codes, row.reviewer, row.note, row.text) == (("LA02",), "Zoë", "café – réunion", "Ynys Môn")


def test_windows_1252_with_accents(tmp_path):
    path = tmp_path / "review.csv"
    path.write_bytes(csv_bytes([
        ["passage_id", "codes", "reviewer", "note"],
        ["p1", "la01", "Zoë", "café – réunion"],
    ], encoding="cp1252"))
    data = path.read_bytes()
    assert b"caf\xe9 \x96 r\xe9union" in data  # really Windows-1252 (en dash is 0x96), not UTF-8
    (row,) = parse_review_csv(data, "review.csv", IDS).rows
    assert (row.passage_id, row.codes, row.reviewer, row.note) == ("p1", ("LA01",), "Zoë", "café – réunion")


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_delimiters(tmp_path, delimiter):
    path = tmp_path / "review.csv"
    path.write_bytes(csv_bytes([
        ["passage_id", "council", "codes", "reviewed", "note"],
        ["p1", "Hollins Vale", "la01, br03", "x", "a, b; c"],
        ["p2", "Westmarch", "LA02 LA10", "", ""],
    ], delimiter=delimiter, bom=True))
    rows = parse_review_csv(path.read_bytes(), "review.csv", IDS).rows
    assert [(r.row, r.passage_id, r.codes, r.marked_reviewed, r.note) for r in rows] == [
        (2, "p1", ("LA01", "BR03"), True, "a, b; c"),
        (3, "p2", ("LA02", "LA10"), False, ""),
    ]


def test_reordered_and_extra_columns_and_headers_in_any_case():
    data = csv_bytes([
        ["My comments", " Note", "CODES ", "Reviewer", "Passage_ID", "reviewed", "colour"],
        ["looks odd", "see p3", "br03", "Ana", "p7", "Y", "red"],
    ])
    (row,) = parse_review_csv(data, "r.csv", IDS).rows
    assert (row.passage_id, row.codes, row.marked_reviewed, row.reviewer, row.note) == \
        ("p7", ("BR03",), True, "Ana", "see p3")


@pytest.mark.parametrize("cell, codes", [
    ("LA01;BR03", ("LA01", "BR03")),
    ("la01, br03", ("LA01", "BR03")),
    ("La01 bR03", ("LA01", "BR03")),
    ("LA01 ; BR03 ;  ", ("LA01", "BR03")),
    ("  la10,,LA02  ", ("LA10", "LA02")),
    ("BR03; br03; BR03", ("BR03",)),   # a duplicate code in one cell is kept once
    ("LA01; LA02; la01", ("LA01", "LA02")),
    ("", ()),
    ("   ", ()),
])
def test_code_cells(cell, codes):
    data = csv_bytes([["passage_id", "codes"], ["p1", cell]])
    assert parse_review_csv(data, "r.csv", IDS).rows[0].codes == codes


def test_trailing_spaces_are_trimmed_everywhere():
    data = csv_bytes([["passage_id", "codes", "reviewed", "reviewer", "note"],
                      ["  p1  ", " LA01 ", " yes ", " Ana ", "  keep this  "]])
    (row,) = parse_review_csv(data, "r.csv", IDS).rows
    assert (row.passage_id, row.codes, row.marked_reviewed, row.reviewer, row.note) == \
        ("p1", ("LA01",), True, "Ana", "keep this")


def test_formula_guard_from_export_is_removed():
    note = "=HYPERLINK(\"http://evil\")"
    text = "-the cuts came first"
    data = csv_bytes([["passage_id", "codes", "note", "text", "reviewer"],
                      ["p1", "LA01", guard_cell(note), guard_cell(text), guard_cell("+Ana")]])
    assert b"'=HYPERLINK" in data and b"'-the cuts" in data
    (row,) = parse_review_csv(data, "r.csv", IDS).rows
    assert (row.note, row.text, row.reviewer) == (note, text, "+Ana")


def test_apostrophe_that_is_not_a_guard_is_kept():
    data = csv_bytes([["passage_id", "codes", "note"], ["p1", "LA01", "'tis fine"]])
    assert parse_review_csv(data, "r.csv", IDS).rows[0].note == "'tis fine"


def test_blank_lines_and_empty_rows_are_skipped_but_counted():
    data = (b"passage_id,codes,reviewed\r\n"
            b"p1,LA01,\r\n"
            b"\r\n"             # row 3: blank line
            b",,\r\n"           # row 4: a row emptied in the spreadsheet
            b" , , \r\n"        # row 5: only spaces
            b"p2,BR03,x\r\n")   # row 6
    rows = parse_review_csv(data, "r.csv", IDS).rows
    assert [(r.row, r.passage_id, r.codes) for r in rows] == [(2, "p1", ("LA01",)), (6, "p2", ("BR03",))]


@pytest.mark.parametrize("value, reviewed", [
    ("yes", True), ("YES", True), ("Yes", True), ("y", True), ("Y", True), ("x", True), ("X", True),
    ("TRUE", True), ("true", True), ("1", True), (" yes ", True),
    ("no", False), ("N", False), ("", False), ("0", False), ("FALSE", False), ("done?", False), ("2", False),
])
def test_reviewed_values(value, reviewed):
    data = csv_bytes([["passage_id", "codes", "reviewed"], ["p1", "LA01", value]])
    assert parse_review_csv(data, "r.csv", IDS).rows[0].marked_reviewed is reviewed


def test_no_reviewed_column_means_not_marked():
    (row,) = parse_review_csv(csv_bytes([["passage_id", "codes"], ["p1", "LA01"]]), "r.csv", IDS).rows
    assert (row.marked_reviewed, row.reviewer, row.note, row.text) == (False, "", "", None)


def test_short_row_missing_trailing_cells():
    data = b"passage_id,codes,reviewer,note\r\np1,LA01\r\n"
    (row,) = parse_review_csv(data, "r.csv", IDS).rows
    assert (row.passage_id, row.codes, row.reviewer, row.note) == ("p1", ("LA01",), "", "")


def test_exported_review_file_reads_back_unchanged(tmp_path):
    passages = [
        CodedPassage("p1", "Hollins Vale", "HOL-01", "=SUM(A1) was the plan", scores={"LA01": 0.7}, applied=("LA01",)),
        CodedPassage("p2", "Hollins Vale", "HOL-01", "-we cut it, then\nwe rebuilt it", scores={"BR03": 0.6},
                     applied=("BR03", "LA02"), gold=("LA02",), reviewer="Ana", note="@not a barrier"),
    ]
    from pipeline.schemas import Code, Codebook
    book = Codebook("t", "v1", tuple(Code(i, "f", f"label {i}", "d", "area") for i in IDS))
    path = tmp_path / "review.csv"
    path.write_bytes(excel_csv_bytes(REVIEW_COLUMNS, review_rows(passages, book)))
    rows = parse_review_csv(path.read_bytes(), str(path), book.ids).rows
    assert [(r.row, r.passage_id, r.codes, r.marked_reviewed, r.reviewer, r.note, r.text) for r in rows] == [
        (2, "p1", ("LA01",), False, "", "", "=SUM(A1) was the plan"),
        (3, "p2", ("LA02",), True, "Ana", "@not a barrier", "-we cut it, then\nwe rebuilt it"),
    ]


# rejections ----------------------------------------------------------------

def test_unknown_codes_every_bad_row_with_nearest_ids(codebook):
    data = csv_bytes([
        ["passage_id", "codes", "reviewed"],
        ["p1", "LA1", "x"],           # row 2: a dropped zero
        ["p2", "LA01", "x"],          # row 3: fine
        ["p3", "br3; LA02", "x"],     # row 4: lower case, dropped zero
        ["p4", "LA01; XX99 ", "x"],   # row 5: nothing close
        ["p5", "LA16, la99", "x"],    # row 6: two bad ids in one cell, both listed
    ], bom=True)
    error = rejection(data, valid=codebook.ids)
    assert error.problems == [
        # LA01 names the same number; LA10 and LA11 are as similar as LA12-LA15, ties go by id
        "row 2: unknown code 'LA1' (nearest valid ids: LA01, LA10, LA11)",
        "row 4: unknown code 'br3' (nearest valid ids: BR03, BR01, BR02)",
        "row 5: unknown code 'XX99' (nearest valid ids: none close)",
        # LA01, LA06 and LA10-LA15 all share three characters with LA16
        "row 6: unknown code 'LA16' (nearest valid ids: LA01, LA06, LA10)",
        # LA09 shares "LA" and "9"; every other LA id shares only "LA"
        "row 6: unknown code 'la99' (nearest valid ids: LA09, LA01, LA02)",
    ]
    assert str(error) == message("review.csv", error.problems)


def test_nearest_id_for_a_dropped_zero_comes_first():
    # "LA1" is exactly as similar to LA10 and LA11 as to LA01 by string similarity; the dropped zero wins.
    error = rejection(csv_bytes([["passage_id", "codes"], ["p1", "LA1"]]), valid=("LA11", "LA10", "LA01"))
    assert error.problems == ["row 2: unknown code 'LA1' (nearest valid ids: LA01, LA10, LA11)"]
    error = rejection(csv_bytes([["passage_id", "codes"], ["p1", "LA001"]]), valid=("LA11", "LA10", "LA01"))
    assert error.problems == ["row 2: unknown code 'LA001' (nearest valid ids: LA01, LA10, LA11)"]


def test_missing_passage_id_column():
    error = rejection(csv_bytes([["id", "codes", "Reviewer"], ["p1", "LA01", "Ana"]], bom=True))
    assert error.problems == ["there is no 'passage_id' column (found: id, codes, reviewer); "
                              "keep the passage_id column of the exported review.csv"]
    assert "keep the passage_id column" in str(error)


def test_missing_codes_column():
    error = rejection(csv_bytes([["passage_id", "code"], ["p1", "LA01"]]))
    assert error.problems == ["there is no 'codes' column; keep the codes column of the exported review.csv"]
    assert str(error) == message("review.csv", error.problems)


def test_duplicated_passage_id_names_both_rows():
    error = rejection(csv_bytes([
        ["passage_id", "codes"],
        ["p1", "LA01"],
        ["p2", "LA02"],
        [" p1 ", "BR03"],  # row 4 repeats row 2 (trailing spaces do not hide it)
    ]))
    assert error.problems == ["row 4: passage_id p1 also appears in row 2; keep one row per passage"]


def test_empty_passage_id_cell():
    error = rejection(csv_bytes([["passage_id", "codes", "note"], ["p1", "LA01", ""], ["  ", "LA02", "mine"]]))
    assert error.problems == ["row 3: passage_id is empty; restore it from the exported file or delete the row"]


@pytest.mark.parametrize("data", [b"", BOM])
def test_empty_file(data):
    error = rejection(data)
    assert error.problems == ["the file is empty; send back the review.csv qcode exported"]
    assert str(error) == message("review.csv", error.problems)


def test_file_of_blank_lines_has_no_header():
    error = rejection(b"\r\n\r\n")
    assert error.problems == ["there is no 'passage_id' column (found: none); "
                              "keep the passage_id column of the exported review.csv"]


def test_binary_data_is_rejected(tmp_path):
    # A workbook saved as .xlsx (a zip archive) and renamed .csv.
    import zipfile

    path = tmp_path / "review.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
    error = rejection(path.read_bytes(), name="review.csv")
    assert len(error.problems) == 1
    assert error.problems == ["is not a text file (binary data, or UTF-16 text); in the spreadsheet use "
                              "Save As and choose CSV UTF-8 (or CSV), then import that file"]
    assert str(error).startswith("review.csv was rejected and nothing from it was applied")


def test_utf16_is_rejected():
    error = rejection("passage_id,codes\r\np1,LA01\r\n".encode("utf-16"))
    assert error.problems[0].startswith("is not a text file (binary data, or UTF-16 text)")


def test_every_problem_is_listed_at_once():
    data = csv_bytes([
        ["passage_id", "codes", "reviewed"],
        ["p1", "LA01", "x"],       # 2 fine
        ["p2", "LA1", "x"],        # 3 unknown code
        ["", "LA02", "x"],         # 4 empty id
        [],                        # 5 blank, skipped
        ["p1", "LA02", "x"],       # 6 duplicate of row 2
        ["p3", "BR3;ZZ", "x"],     # 7 two unknown codes
    ])
    error = rejection(data)
    assert error.problems == [
        "row 3: unknown code 'LA1' (nearest valid ids: LA01, LA10, LA02)",
        "row 4: passage_id is empty; restore it from the exported file or delete the row",
        "row 6: passage_id p1 also appears in row 2; keep one row per passage",
        "row 7: unknown code 'BR3' (nearest valid ids: BR03)",
        "row 7: unknown code 'ZZ' (nearest valid ids: none close)",
    ]
    assert str(error) == message("review.csv", error.problems)


def test_row_numbers_are_spreadsheet_rows_even_after_multiline_cells():
    # A note or passage with line breaks is one spreadsheet row, however many lines it spans in the file.
    data = csv_bytes([
        ["passage_id", "text", "codes", "note"],
        ["p1", "first line\nsecond line\nthird line", "LA01", "a\nb"],   # row 2
        ["p2", "one line", "LA01", ""],                                  # row 3
        ["p3", "x", "ZZ9", ""],                                         # row 4
        ["p2", "dup", "LA02", ""],                                       # row 5
    ], bom=True)
    error = rejection(data)
    assert error.problems == [
        "row 4: unknown code 'ZZ9' (nearest valid ids: none close)",
        "row 5: passage_id p2 also appears in row 3; keep one row per passage",
    ]
    fixed = data.replace(b"ZZ9", b"LA10").replace(b"p2,dup", b"p4,dup")
    rows = parse_review_csv(fixed, "r.csv", IDS).rows
    assert [(r.row, r.passage_id) for r in rows] == [(2, "p1"), (3, "p2"), (4, "p3"), (5, "p4")]
    assert rows[0].text == "first line\nsecond line\nthird line"


# format_suggestions ---------------------------------------------------------

def test_format_suggestions_shows_five_by_default_and_respects_limit():
    scores = {"LA01": 0.9, "LA02": 0.8, "LA03": 0.7, "LA04": 0.6, "LA05": 0.5, "LA06": 0.4, "LA07": 0.3}
    assert format_suggestions(scores) == "LA01=0.90; LA02=0.80; LA03=0.70; LA04=0.60; LA05=0.50"
    assert format_suggestions(scores, limit=2) == "LA01=0.90; LA02=0.80"
    assert format_suggestions(scores, limit=0) == ""
    assert format_suggestions({"B": 0.5, "A": 0.5, "C": 0.6}, limit=2) == "C=0.60; A=0.50"
