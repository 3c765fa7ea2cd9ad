"""pipeline/report.py and pipeline/review.py: real CSV files in tmp_path, read back with csv."""

from __future__ import annotations

import csv
from dataclasses import replace
import json
import os

import pytest

from pipeline.report import KEPT_EDITED, UNCHANGED, WRITTEN, write_export, write_reports, write_run_report
from pipeline.review import REVIEW_COLUMNS, format_suggestions, review_rows
from pipeline.schemas import Code, Codebook, CodedPassage
from pipeline.spreadsheet import guard_cell, sha256_bytes, sha256_file
from pipeline.store import Store
from pipeline.summarise import SUMMARY_COLUMNS

BOOK = Codebook("test", "v1", (
    Code("LA01", "leadership action", "Bold, ambitious, united leadership", "d", "vision"),
    Code("LA02", "leadership action", "Innovative partnerships", "d", "cross-boundary working"),
    Code("BR01", "barrier", "Austerity", "d", "external context"),
))

PASSAGES = [
    CodedPassage("p1", "Hollins Vale", "HOL-01", "We pooled budgets with the trust.", respondent_role="director",
                 round="r1", question="How did it start?", scores={"LA02": 0.71, "BR01": 0.33}, applied=("LA02",)),
    CodedPassage("p2", "Hollins Vale", "HOL-02", "=HYPERLINK(\"http://evil\")", question=None,
                 scores={"LA01": 0.4}, applied=()),
    CodedPassage("p3", "Westmarch", "WMC-01", "The cuts hit us hard, but the leader kept the vision.",
                 scores={"BR01": 0.62, "LA01": 0.58}, applied=("BR01", "LA01")),
]


def read_csv(path):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


# review rows ---------------------------------------------------------------

def test_format_suggestions_strongest_first_ties_by_id():
    assert format_suggestions({"BR03": 0.551, "LA02": 0.82, "LA01": 0.82, "BR01": 0.3}) == \
        "LA01=0.82; LA02=0.82; BR03=0.55; BR01=0.30"
    assert format_suggestions({}) == ""


def test_review_rows_follow_review_columns():
    rows = review_rows(PASSAGES, BOOK)
    assert all(len(r) == len(REVIEW_COLUMNS) for r in rows)
    as_dicts = [dict(zip(REVIEW_COLUMNS, r)) for r in rows]
    assert as_dicts[0] == {
        "passage_id": "p1", "council": "Hollins Vale", "interview_id": "HOL-01", "respondent_role": "director",
        "round": "r1", "question": "How did it start?", "text": "We pooled budgets with the trust.",
        "suggested": "LA02=0.71; BR01=0.33", "why": "", "codes": "LA02", "code_labels": "Innovative partnerships",
        "reviewed": "", "reviewer": "", "note": "",
    }
    assert as_dicts[1]["question"] == ""  # None becomes empty
    assert (as_dicts[1]["codes"], as_dicts[1]["code_labels"]) == ("", "")
    assert as_dicts[2]["codes"] == "BR01; LA01"
    assert as_dicts[2]["code_labels"] == "Austerity; Bold, ambitious, united leadership"
    reviewed = replace(PASSAGES[0], gold=("BR01",), reviewer="Ana", note="not a partnership", why='LA02: "x"')
    row = dict(zip(REVIEW_COLUMNS, review_rows([reviewed], BOOK)[0]))
    assert (row["codes"], row["reviewed"], row["reviewer"], row["note"], row["why"]) == \
        ("BR01", "yes", "Ana", "not a partnership", 'LA02: "x"')
    unknown = CodedPassage("p9", "X", "X-1", "t", applied=("LA99",))
    assert review_rows([unknown], BOOK)[0][REVIEW_COLUMNS.index("code_labels")] == "LA99"


# writing reports -----------------------------------------------------------

def never_written(_path):
    return None


def test_write_reports_writes_each_council_folder_and_the_matrix(tmp_path):
    out = tmp_path / "reports"
    results = write_reports(out, PASSAGES, BOOK, never_written)
    assert [(r.path.relative_to(out).as_posix(), r.status) for r in results] == [
        ("hollins-vale/summary.csv", WRITTEN), ("westmarch/summary.csv", WRITTEN),
        ("hollins-vale/review.csv", WRITTEN), ("westmarch/review.csv", WRITTEN),
        ("councils_by_code.csv", WRITTEN),
    ]
    for r in results:
        assert r.sha256 == sha256_file(r.path)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "councils_by_code.csv", "hollins-vale", "hollins-vale/review.csv", "hollins-vale/summary.csv",
        "westmarch", "westmarch/review.csv", "westmarch/summary.csv",
    ]

    review = read_csv(out / "hollins-vale" / "review.csv")
    assert tuple(review[0]) == REVIEW_COLUMNS
    assert review[1:] == [[guard_cell(v) for v in row] for row in review_rows(PASSAGES[:2], BOOK)]
    assert [r[0] for r in read_csv(out / "westmarch" / "review.csv")[1:]] == ["p3"]

    summary = read_csv(out / "westmarch" / "summary.csv")
    assert tuple(summary[0]) == SUMMARY_COLUMNS
    # Westmarch: one coded passage with BR01 and LA01 -> each 1 passage, 1 interview, share 1.0.
    assert summary[1:] == [
        ["LA01", "leadership action", "Bold, ambitious, united leadership", "vision", "1", "1", "1.0",
         PASSAGES[2].text, ""],
        ["LA02", "leadership action", "Innovative partnerships", "cross-boundary working", "0", "0", "0.0", "", ""],
        ["BR01", "barrier", "Austerity", "external context", "1", "1", "1.0", PASSAGES[2].text, ""],
    ]

    assert read_csv(out / "councils_by_code.csv") == [
        ["council", "LA01", "LA02", "BR01"],
        ["Hollins Vale", "0", "1", "0"],
        ["Westmarch", "1", "0", "1"],
        ["councils with code", "1", "1", "1"],
    ]


def test_formula_cell_is_guarded_in_the_written_file(tmp_path):
    write_reports(tmp_path, PASSAGES, BOOK, never_written)
    raw = (tmp_path / "hollins-vale" / "review.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in raw
    rows = read_csv(tmp_path / "hollins-vale" / "review.csv")
    text = REVIEW_COLUMNS.index("text")
    assert rows[2][text] == "'=HYPERLINK(\"http://evil\")"
    assert not any(cell.startswith("=") for row in rows for cell in row)


def record(store: Store, results) -> None:
    for r in results:
        store.record_export(r.path, r.sha256, "run")


def test_identical_rerun_is_unchanged_and_does_not_rewrite(tmp_path):
    out = tmp_path / "reports"
    with Store(tmp_path / "q.duckdb") as store:
        first = write_reports(out, PASSAGES, BOOK, store.export_hash)
        record(store, first)
        old = 1_000_000_000  # 2001: any rewrite would give the file the current time
        for r in first:
            os.utime(r.path, ns=(old, old))
        second = write_reports(out, PASSAGES, BOOK, store.export_hash)
    assert [r.status for r in second] == [UNCHANGED] * 5
    assert [(r.path, r.sha256) for r in second] == [(r.path, r.sha256) for r in first]
    assert all(r.path.stat().st_mtime_ns == old for r in second)


def test_edited_review_is_kept_and_fresh_export_goes_beside_it(tmp_path):
    out = tmp_path / "reports"
    with Store(tmp_path / "q.duckdb") as store:
        first = write_reports(out, PASSAGES, BOOK, store.export_hash)
        record(store, first)
        review = out / "hollins-vale" / "review.csv"
        written = review.read_bytes()
        with open(review, "a", encoding="utf-8", newline="") as handle:  # a reviewer adds a row
            csv.writer(handle, lineterminator="\r\n").writerow(["p1", "Hollins Vale", "", "", "", "", "", "", "LA01"])
        edited = review.read_bytes()
        assert edited != written

        second = write_reports(out, PASSAGES, BOOK, store.export_hash)
    by_path = {r.path.relative_to(out).as_posix(): r.status for r in second}
    assert by_path == {
        "hollins-vale/summary.csv": UNCHANGED, "hollins-vale/review-new.csv": KEPT_EDITED,
        "westmarch/summary.csv": UNCHANGED, "westmarch/review.csv": UNCHANGED,
        "councils_by_code.csv": UNCHANGED,
    }
    assert review.read_bytes() == edited
    assert (out / "hollins-vale" / "review-new.csv").read_bytes() == written


def test_unedited_review_is_replaced_when_codings_change(tmp_path):
    out = tmp_path / "reports"
    recorded: dict = {}
    for r in write_reports(out, PASSAGES, BOOK, recorded.get):
        recorded[r.path] = r.sha256
    recoded = [PASSAGES[0], PASSAGES[1], CodedPassage("p3", "Westmarch", "WMC-01", PASSAGES[2].text,
                                                      scores={"BR01": 0.62}, applied=("BR01",))]
    results = {r.path.relative_to(out).as_posix(): r.status for r in write_reports(out, recoded, BOOK, recorded.get)}
    assert results["westmarch/review.csv"] == WRITTEN
    assert results["hollins-vale/review.csv"] == UNCHANGED
    assert not (out / "westmarch" / "review-new.csv").exists()
    codes = REVIEW_COLUMNS.index("codes")
    assert read_csv(out / "westmarch" / "review.csv")[1][codes] == "BR01"


def test_write_export_statuses(tmp_path):
    path = tmp_path / "f.csv"
    assert write_export(path, b"one", None).status == WRITTEN
    assert write_export(path, b"one", None).status == UNCHANGED
    # Not protected: replaced even though the last recorded hash is unknown.
    assert write_export(path, b"two", None).status == WRITTEN
    assert path.read_bytes() == b"two"
    # Protected and the file is what qcode last wrote: replaced.
    result = write_export(path, b"three", sha256_bytes(b"two"), protect_edits=True)
    assert (result.path, result.status, path.read_bytes()) == (path, WRITTEN, b"three")
    # Protected and the file differs from what qcode last wrote: left alone.
    result = write_export(path, b"four", sha256_bytes(b"two"), protect_edits=True)
    assert (result.path.name, result.status) == ("f-new.csv", KEPT_EDITED)
    assert result.sha256 == sha256_bytes(b"four")
    assert path.read_bytes() == b"three"
    assert (tmp_path / "f-new.csv").read_bytes() == b"four"


def test_write_run_report(tmp_path):
    report = {"files_seen": 3, "quarantined": [{"source": "Bad.txt", "reason": "empty"}], "council": "Ynys Môn"}
    path = write_run_report(tmp_path / "reports", report)
    assert path == tmp_path / "reports" / "run-report.json"
    assert json.loads(path.read_text(encoding="utf-8")) == report
    assert "Ynys Môn" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("council, folder", [("Hollins Vale", "hollins-vale"), ("St. Albans & District", "st-albans-district")])
def test_council_folder_is_slugified(tmp_path, council, folder):
    p = CodedPassage("p1", council, "I1", "text", applied=())
    write_reports(tmp_path, [p], BOOK, never_written)
    assert (tmp_path / folder / "review.csv").exists()
    assert (tmp_path / folder / "summary.csv").exists()
