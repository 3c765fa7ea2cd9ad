"""pipeline/report.py and pipeline/review.py: real CSV files in tmp_path, read back with csv."""

from __future__ import annotations

import csv
from dataclasses import replace
import json
import os

import numpy as np
import pytest

from pipeline.report import (KEPT_EDITED, UNCHANGED, WRITTEN, write_agreement_tables, write_analysis_tables, write_export,
                             write_reports, write_run_report)
from pipeline.agreement import compare_coders
from pipeline.review import REVIEW_COLUMNS, format_suggestions, review_export, review_rows
from pipeline.schemas import Code, Codebook, CodedPassage, Passage, SegmentedTranscript, Transcript, TranscriptMeta, Turn
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
        "reviewed": "", "reviewer": "", "note": "", "export_id": "",
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

def never_written(_sha256):
    return False


def test_write_reports_writes_each_council_folder_and_the_matrix(tmp_path):
    out = tmp_path / "reports"
    results = write_reports(out, PASSAGES, BOOK, never_written)
    assert [(r.path.relative_to(out).as_posix(), r.status) for r in results] == [
        ("hollins-vale/summary.csv", WRITTEN), ("hollins-vale/review.csv", WRITTEN),
        ("westmarch/summary.csv", WRITTEN), ("westmarch/review.csv", WRITTEN),
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
    export_id = review_export("Hollins Vale", PASSAGES[:2]).export_id
    assert review[1:] == [[guard_cell(v) for v in row] for row in review_rows(PASSAGES[:2], BOOK, export_id)]
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
        first = write_reports(out, PASSAGES, BOOK, store.wrote_content)
        record(store, first)
        old = 1_000_000_000  # 2001: any rewrite would give the file the current time
        for r in first:
            os.utime(r.path, ns=(old, old))
        second = write_reports(out, PASSAGES, BOOK, store.wrote_content)
    assert [r.status for r in second] == [UNCHANGED] * 5
    assert [(r.path, r.sha256) for r in second] == [(r.path, r.sha256) for r in first]
    assert all(r.path.stat().st_mtime_ns == old for r in second)


def test_edited_review_is_kept_and_fresh_export_goes_beside_it(tmp_path):
    out = tmp_path / "reports"
    with Store(tmp_path / "q.duckdb") as store:
        first = write_reports(out, PASSAGES, BOOK, store.wrote_content)
        record(store, first)
        review = out / "hollins-vale" / "review.csv"
        written = review.read_bytes()
        with open(review, "a", encoding="utf-8", newline="") as handle:  # a reviewer adds a row
            csv.writer(handle, lineterminator="\r\n").writerow(["p1", "Hollins Vale", "", "", "", "", "", "", "LA01"])
        edited = review.read_bytes()
        assert edited != written

        second = write_reports(out, PASSAGES, BOOK, store.wrote_content)
    by_path = {r.path.relative_to(out).as_posix(): r.status for r in second}
    assert by_path == {
        "hollins-vale/summary.csv": UNCHANGED, "hollins-vale/review-new.csv": KEPT_EDITED,
        "westmarch/summary.csv": UNCHANGED, "westmarch/review.csv": UNCHANGED,
        "councils_by_code.csv": UNCHANGED,
    }
    assert review.read_bytes() == edited
    assert (out / "hollins-vale" / "review-new.csv").read_bytes() == written


def test_a_moved_reports_folder_is_still_recognised_as_unedited(tmp_path):
    with Store(tmp_path / "q.duckdb") as store:
        record(store, write_reports(tmp_path / "old", PASSAGES, BOOK, store.wrote_content))
        (tmp_path / "old").rename(tmp_path / "new")
        recoded = [replace(PASSAGES[0], applied=("BR01",)), *PASSAGES[1:]]
        results = write_reports(tmp_path / "new", recoded, BOOK, store.wrote_content)
    statuses = {r.path.relative_to(tmp_path / "new").as_posix(): r.status for r in results}
    assert statuses["hollins-vale/review.csv"] == WRITTEN  # the content was qcode's own, so it is replaced


def test_unedited_review_is_replaced_when_codings_change(tmp_path):
    out = tmp_path / "reports"
    recorded: set = set()
    for r in write_reports(out, PASSAGES, BOOK, recorded.__contains__):
        recorded.add(r.sha256)
    recoded = [PASSAGES[0], PASSAGES[1], CodedPassage("p3", "Westmarch", "WMC-01", PASSAGES[2].text,
                                                      scores={"BR01": 0.62}, applied=("BR01",))]
    results = {r.path.relative_to(out).as_posix(): r.status for r in write_reports(out, recoded, BOOK, recorded.__contains__)}
    assert results["westmarch/review.csv"] == WRITTEN
    assert results["hollins-vale/review.csv"] == UNCHANGED
    assert not (out / "westmarch" / "review-new.csv").exists()
    codes = REVIEW_COLUMNS.index("codes")
    assert read_csv(out / "westmarch" / "review.csv")[1][codes] == "BR01"


def test_write_export_statuses(tmp_path):
    path = tmp_path / "f.csv"
    ours = {sha256_bytes(b"two")}.__contains__
    assert write_export(path, b"one", never_written).status == WRITTEN
    assert write_export(path, b"one", never_written).status == UNCHANGED
    # Not protected: replaced even though qcode has no record of the content.
    assert write_export(path, b"two", never_written).status == WRITTEN
    assert path.read_bytes() == b"two"
    # Protected and the file holds content qcode wrote: replaced.
    result = write_export(path, b"three", ours, protect_edits=True)
    assert (result.path, result.status, path.read_bytes()) == (path, WRITTEN, b"three")
    # Protected and the file holds content qcode never wrote: left alone.
    result = write_export(path, b"four", ours, protect_edits=True)
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


# analysis tables -----------------------------------------------------------

ANALYSIS_PASSAGES = [
    # model only: the applied code counts
    CodedPassage("p1", "Hollins Vale", "HOL-01", "We pooled budgets with the trust.", respondent_role="director",
                 round="r1", applied=("LA02",)),
    # gold outranks the model: BR01 and LA01 were applied, the reviewer kept only LA02
    CodedPassage("p2", "Hollins Vale", "HOL-02", "-Partnership came first, then the cuts.", applied=("BR01", "LA01"),
                 gold=("LA02",), reviewer="Ana"),
    # a reviewer removed every code: gold is empty, not "no decision"
    CodedPassage("p3", "Westmarch", "WMC-01", "We had a nice away day.", round="r2", applied=("LA01",), gold=(),
                 reviewer="Ben"),
    # model only, applied in an order unlike the codebook's
    CodedPassage("p4", "Westmarch", "WMC-01", "The cuts hit us hard, but the leader kept the vision.",
                 applied=("BR01", "LA01")),
    CodedPassage("p5", "Westmarch", "WMC-02", "No code at all.", applied=()),
]


def test_passages_by_code_has_0_1_per_code_and_a_source(tmp_path):
    results = write_analysis_tables(tmp_path, ANALYSIS_PASSAGES, BOOK, never_written)
    assert [(r.path, r.status) for r in results] == [
        (tmp_path / "passages_by_code.csv", WRITTEN), (tmp_path / "quotes.csv", WRITTEN)]
    assert all(r.sha256 == sha256_file(r.path) for r in results)
    assert read_csv(tmp_path / "passages_by_code.csv") == [
        ["passage_id", "council", "interview_id", "respondent_role", "round", "source", "LA01", "LA02", "BR01"],
        ["p1", "Hollins Vale", "HOL-01", "director", "r1", "model", "0", "1", "0"],
        ["p2", "Hollins Vale", "HOL-02", "", "", "reviewer Ana", "0", "1", "0"],
        ["p3", "Westmarch", "WMC-01", "", "r2", "reviewer Ben", "0", "0", "0"],
        ["p4", "Westmarch", "WMC-01", "", "", "model", "1", "0", "1"],
        ["p5", "Westmarch", "WMC-02", "", "", "model", "0", "0", "0"],
    ]


def test_quotes_has_one_row_per_passage_and_code(tmp_path):
    write_analysis_tables(tmp_path, ANALYSIS_PASSAGES, BOOK, never_written)
    rows = read_csv(tmp_path / "quotes.csv")
    assert rows[0] == ["passage_id", "council", "interview_id", "respondent_role", "round", "code_id", "code_label",
                       "family", "framework_area", "source", "text"]
    assert rows[1:] == [
        ["p1", "Hollins Vale", "HOL-01", "director", "r1", "LA02", "Innovative partnerships", "leadership action",
         "cross-boundary working", "model", "We pooled budgets with the trust."],
        # the reviewer's code only; the text starting with "-" is guarded for Excel
        ["p2", "Hollins Vale", "HOL-02", "", "", "LA02", "Innovative partnerships", "leadership action",
         "cross-boundary working", "reviewer Ana", "'-Partnership came first, then the cuts."],
        # p3: gold is empty -> no quote rows; p4: one row per code, in codebook order
        ["p4", "Westmarch", "WMC-01", "", "", "LA01", "Bold, ambitious, united leadership", "leadership action",
         "vision", "model", ANALYSIS_PASSAGES[3].text],
        ["p4", "Westmarch", "WMC-01", "", "", "BR01", "Austerity", "barrier", "external context", "model",
         ANALYSIS_PASSAGES[3].text],
    ]


def test_analysis_tables_rerun_is_unchanged(tmp_path):
    recorded: dict = {}
    for r in write_analysis_tables(tmp_path, ANALYSIS_PASSAGES, BOOK, recorded.get):
        recorded[r.path] = r.sha256
    again = write_analysis_tables(tmp_path, ANALYSIS_PASSAGES, BOOK, recorded.get)
    assert [r.status for r in again] == [UNCHANGED, UNCHANGED]
    # A new reviewer decision changes both tables.
    reviewed = [replace(ANALYSIS_PASSAGES[0], gold=("BR01",), reviewer="Cy"), *ANALYSIS_PASSAGES[1:]]
    changed = write_analysis_tables(tmp_path, reviewed, BOOK, recorded.get)
    assert [r.status for r in changed] == [WRITTEN, WRITTEN]
    assert read_csv(tmp_path / "passages_by_code.csv")[1] == \
        ["p1", "Hollins Vale", "HOL-01", "director", "r1", "reviewer Cy", "0", "0", "1"]


# agreement tables ----------------------------------------------------------

AGREEMENT_COLUMNS = ["code_id", "label", "support", "support_other", "precision", "recall", "f1", "kappa", "alpha",
                     "alpha_reading"]
# Reference (reviewers) and other (model) over LA01, LA02, BR01; BR01 is never used.
REFERENCE = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
OTHER = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 1, 0]])
# LA01: tp 1, fp 0, fn 1 -> P 1, R 0.5, F1 0.667; kappa (0.75 - 0.5) / 0.5 = 0.5; alpha 1 - 7 * 2 / 30 = 0.533
# LA02: tp 1, fp 1, fn 0 -> P 0.5, R 1, F1 0.667; kappa 0.5; alpha 0.533
# micro: tp 2, fp 1, fn 1 -> 0.667; macro over LA01 and LA02 -> 0.667
EXPECTED_TABLE = [
    ["LA01", "Bold, ambitious, united leadership", "2", "1", "1.000", "0.500", "0.667", "0.500", "0.533", "unreliable"],
    ["LA02", "Innovative partnerships", "1", "2", "0.500", "1.000", "0.667", "0.500", "0.533", "unreliable"],
    ["BR01", "Austerity", "0", "0", "0.000", "0.000", "0.000", "n/a", "n/a", "n/a (no variation)"],
    ["micro F1", "", "", "", "", "", "0.667", "", "", ""],
    ["macro F1", "", "", "", "", "", "0.667", "", "", ""],
]


def agreement_report_dict(pairs=()):
    return {"council": "all", "reviewed_passages": 4, "model_vs_reviewers": compare_coders(REFERENCE, OTHER, BOOK.ids),
            "reviewer_pairs": list(pairs)}


def test_model_vs_reviewers_table(tmp_path):
    out = tmp_path / "agreement"
    written = write_agreement_tables(out, agreement_report_dict(), BOOK)
    assert written == [out / "model_vs_reviewers.csv"]
    assert sorted(p.name for p in out.iterdir()) == ["model_vs_reviewers.csv"]
    assert read_csv(out / "model_vs_reviewers.csv") == [AGREEMENT_COLUMNS, *EXPECTED_TABLE]


def test_reviewer_pairs_and_disagreements_tables(tmp_path):
    pair = compare_coders(REFERENCE, OTHER, BOOK.ids)
    pair.update(reviewer_a="Ana", reviewer_b="Ben", disagreements=[
        {"passage_id": "p2", "council": "Hollins Vale", "interview_id": "HOL-01", "text": "=the cuts",
         "codes_a": "LA01", "codes_b": ""},
    ])
    written = write_agreement_tables(tmp_path, agreement_report_dict([pair]), BOOK)
    assert [p.name for p in written] == ["model_vs_reviewers.csv", "reviewer_pairs.csv", "disagreements.csv"]
    assert read_csv(tmp_path / "reviewer_pairs.csv") == [
        ["reviewer_a", "reviewer_b", *AGREEMENT_COLUMNS], *(["Ana", "Ben", *row] for row in EXPECTED_TABLE)]
    assert read_csv(tmp_path / "disagreements.csv") == [
        ["reviewer_a", "reviewer_b", "passage_id", "council", "interview_id", "text", "codes_a", "codes_b"],
        ["Ana", "Ben", "p2", "Hollins Vale", "HOL-01", "'=the cuts", "LA01", ""],
    ]


def test_no_model_comparison_writes_only_reviewer_tables(tmp_path):
    pair = compare_coders(REFERENCE, REFERENCE, BOOK.ids)
    pair.update(reviewer_a="Ana", reviewer_b="Ben", disagreements=[])
    report = {"council": "all", "reviewed_passages": 0, "model_vs_reviewers": None, "reviewer_pairs": [pair]}
    written = write_agreement_tables(tmp_path, report, BOOK)
    assert [p.name for p in written] == ["reviewer_pairs.csv", "disagreements.csv"]
    assert not (tmp_path / "model_vs_reviewers.csv").exists()
    assert read_csv(tmp_path / "disagreements.csv") == [
        ["reviewer_a", "reviewer_b", "passage_id", "council", "interview_id", "text", "codes_a", "codes_b"]]
    la01 = read_csv(tmp_path / "reviewer_pairs.csv")[1]
    assert la01 == ["Ana", "Ben", "LA01", "Bold, ambitious, united leadership", "2", "2", "1.000", "1.000", "1.000",
                    "1.000", "1.000", "reliable"]


def _save_interview(store, council, interview_id, texts):
    """Store one interview: an interviewer question, then one respondent passage per text."""
    question = "How did it start?"
    body = question + "\n" + "\n".join(texts)
    meta = TranscriptMeta(council=council, interview_id=interview_id)
    turns = [Turn(0, "Interviewer", "interviewer", 0, len(question), question)]
    passages, start = [], len(question) + 1
    for i, (pid, text) in enumerate(texts.items(), start=1):
        turns.append(Turn(i, "Respondent", "respondent", start, start + len(text), text))
        passages.append(Passage(pid, meta.key, i, "Respondent", start, start + len(text), text))
        start += len(text) + 1
    store.save_transcript(SegmentedTranscript(Transcript(f"{interview_id}.txt", meta, body), tuple(turns),
                                              tuple(passages)), "run-1")


def test_agreement_report_from_a_real_database_lists_only_real_disagreements(tmp_path, settings, codebook):
    from pipeline import review_steps
    from pipeline.store import Store

    texts = {"pa": "The leader set a ten-year vision.", "pb": "We pooled budgets, but had no staff to spare.",
             "pc": "-We had a nice away day.", "pd": "Legal advice slowed everything down."}
    with Store(settings.db_path) as store:
        _save_interview(store, "Hollins Vale", "HOL-01", texts)
        store.register_coder("zs-test", "zero-shot", "test-model", codebook.version, {})
        code_ids = list(codebook.ids)
        applied = np.zeros((4, len(code_ids)), dtype=bool)
        applied[0, code_ids.index("LA01")] = True
        store.save_codings(coder_id="zs-test", codebook_version=codebook.version, run_id="run-1",
                           passage_ids=list(texts), code_ids=code_ids, scores=applied.astype(float),
                           applied=applied, floor=0.5)

        def decide(pid, reviewer, codes):
            store.add_decisions([dict(passage_id=pid, reviewer=reviewer, codes_before=(), codes_after=codes, note="",
                                      kind="review", source_file="r.csv", source_sha256="x",
                                      codebook_version=codebook.version)])

        decide("pa", "Ana", ("LA01",))
        decide("pa", "Ben", ("LA01",))           # agree
        decide("pb", "Ana", ("LA02", "BR03"))
        decide("pb", "Ben", ("BR03", "LA02"))    # same codes in another order: agree
        decide("pc", "Ana", ())
        decide("pc", "Ben", ("BR01",))           # differ
        decide("pd", "Ana", ("BR01",))           # only one reviewer: not in the pair at all

    report = review_steps.agreement_report(settings)
    out = tmp_path / "agreement"
    written = write_agreement_tables(out, report, codebook)
    assert [p.name for p in written] == ["model_vs_reviewers.csv", "reviewer_pairs.csv", "disagreements.csv"]
    assert read_csv(out / "disagreements.csv") == [
        ["reviewer_a", "reviewer_b", "passage_id", "council", "interview_id", "text", "codes_a", "codes_b"],
        ["Ana", "Ben", "pc", "Hollins Vale", "HOL-01", "'-We had a nice away day.", "", "BR01"],
    ]
    pairs = {row[2]: row for row in read_csv(out / "reviewer_pairs.csv")[1:]}
    assert len(pairs) == len(codebook.ids) + 2
    # three passages coded by both. LA01: Ana 1,0,0 and Ben 1,0,0 -> perfect
    assert pairs["LA01"][2:] == ["LA01", codebook.code("LA01").label, "1", "1", "1.000", "1.000", "1.000", "1.000",
                                 "1.000", "reliable"]
    # BR01: Ana 0,0,0 and Ben 0,0,1 -> tp 0, fp 1; kappa: p_o 2/3, p_e 0 * 1/3 + 1 * 2/3 = 2/3 -> 0;
    # alpha: o_00 = 4, o_01 = o_10 = 1, n_0 = 5, n_1 = 1, n = 6 -> 1 - 5 * 2 / (2 * 5 * 1) = 0
    assert pairs["BR01"][2:] == ["BR01", codebook.code("BR01").label, "0", "1", "0.000", "0.000", "0.000", "0.000",
                                 "0.000", "unreliable"]
    assert pairs["LA05"][2:] == ["LA05", codebook.code("LA05").label, "0", "0", "0.000", "0.000", "0.000", "n/a",
                                 "n/a", "n/a (no variation)"]
    # micro: tp 3 (pa LA01, pb LA02, pb BR03), fp 1 (pc BR01), fn 0 -> P 0.75, R 1 -> F1 6/7 = 0.857
    assert pairs["micro F1"] == ["Ana", "Ben", "micro F1", "", "", "", "", "", "0.857", "", "", ""]
    # model vs reviewers: gold is each passage's newest decision (pa LA01, pb LA02+BR03, pc BR01, pd BR01);
    # the model applied LA01 to pa only -> LA01 tp 1; micro tp 1, fp 0, fn 4 -> P 1, R 0.2 -> F1 1/3
    model = {row[0]: row for row in read_csv(out / "model_vs_reviewers.csv")[1:]}
    assert model["micro F1"][6] == "0.333"
    assert model["LA01"][2:7] == ["1", "1", "1.000", "1.000", "1.000"]
    assert model["BR01"][2:7] == ["2", "0", "0.000", "0.000", "0.000"]
