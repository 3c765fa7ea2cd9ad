"""pipeline/agreement.py and pipeline/evaluate.py against small cases computed by hand."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from pipeline.agreement import multilabel_f1, top_k_accuracy, top_k_recall
from pipeline.errors import QcodeError
from pipeline.evaluate import LabelledPassage, evaluate_scores, indicator_matrix, read_labelled_csv

CODES = ["A", "B", "C", "D"]
TRUTH = np.array([
    [1, 0, 1, 0],
    [0, 1, 0, 0],
    [1, 1, 0, 0],
    [0, 0, 0, 0],
])
PREDICTED = np.array([
    [1, 1, 0, 0],
    [0, 1, 0, 0],
    [0, 1, 0, 0],
    [0, 0, 0, 1],
])


def test_multilabel_f1_by_hand():
    report = multilabel_f1(TRUTH, PREDICTED, CODES)
    # A: tp = 1 (row 0), fp = 0, fn = 1 (row 2) -> P = 1, R = 1/2, F1 = 2 * 1 * 0.5 / 1.5 = 2/3; support 2
    assert report.per_code["A"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    # B: tp = 2 (rows 1, 2), fp = 1 (row 0), fn = 0 -> P = 2/3, R = 1, F1 = 2 * (2/3) / (5/3) = 0.8; support 2
    assert report.per_code["B"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    # C: tp = 0, fp = 0, fn = 1 -> P = R = F1 = 0 (no division by zero); support 1
    assert report.per_code["C"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # D: never true, predicted once -> fp = 1, all zero, support 0
    assert report.per_code["D"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # micro: tp = 1 + 2 = 3, fp = 1 (B) + 1 (D) = 2, fn = 1 (A) + 1 (C) = 2 -> P = R = 3/5 -> F1 = 0.6
    assert report.micro_f1 == pytest.approx(0.6)
    # macro over codes present in truth (A, B, C; not D): (2/3 + 0.8 + 0) / 3 = 0.48889
    assert report.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)


def test_multilabel_f1_perfect_and_empty():
    perfect = multilabel_f1(TRUTH, TRUTH, CODES)
    assert perfect.micro_f1 == 1.0 and perfect.macro_f1 == 1.0
    nothing = multilabel_f1(np.zeros((2, 2)), np.zeros((2, 2)), ["A", "B"])
    assert nothing.micro_f1 == 0.0 and nothing.macro_f1 == 0.0


# Row 3 has no true code, so top-k accuracy ignores it.
RANK_TRUTH = np.array([
    [1, 0, 0],
    [0, 0, 1],
    [0, 1, 1],
    [0, 0, 0],
])
RANK_SCORES = np.array([
    [0.9, 0.5, 0.1],  # ranking A, B, C
    [0.8, 0.7, 0.6],  # ranking A, B, C
    [0.2, 0.9, 0.3],  # ranking B, C, A
    [0.9, 0.1, 0.1],
])


def test_top_k_accuracy_by_hand():
    # k=1: row 0 top A is true (hit), row 1 top A but truth C (miss), row 2 top B true (hit) -> 2/3
    assert top_k_accuracy(RANK_TRUTH, RANK_SCORES, 1) == pytest.approx(2 / 3)
    # k=2: row 1's top two are A, B, still a miss -> 2/3
    assert top_k_accuracy(RANK_TRUTH, RANK_SCORES, 2) == pytest.approx(2 / 3)
    # k=3: every code is in the top three -> 3/3
    assert top_k_accuracy(RANK_TRUTH, RANK_SCORES, 3) == 1.0
    assert top_k_accuracy(np.zeros((2, 3)), RANK_SCORES[:2], 1) == 0.0


def test_top_k_recall_by_hand():
    # True pairs: (0, A), (1, C), (2, B), (2, C) -> 4.
    # k=1: (0, A) and (2, B) are ranked first -> 2/4
    assert top_k_recall(RANK_TRUTH, RANK_SCORES, 1) == 0.5
    # k=2: row 2's top two are B and C, so (2, C) joins; (1, C) is third -> 3/4
    assert top_k_recall(RANK_TRUTH, RANK_SCORES, 2) == 0.75
    assert top_k_recall(RANK_TRUTH, RANK_SCORES, 3) == 1.0
    assert top_k_recall(np.zeros((2, 3)), RANK_SCORES[:2], 3) == 0.0


def test_ties_are_broken_by_column_order():
    # Equal scores: the stable sort puts column 0 first, so the true column 1 is missed at k=1.
    assert top_k_accuracy(np.array([[0, 1]]), np.array([[0.5, 0.5]]), 1) == 0.0
    assert top_k_recall(np.array([[1, 0]]), np.array([[0.5, 0.5]]), 1) == 1.0


def test_evaluate_scores_headline_figures():
    applied = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]])
    result = evaluate_scores(RANK_TRUTH.astype(bool), RANK_SCORES, applied.astype(bool), ["A", "B", "C"])
    assert result["passages"] == 4
    assert result["coded_passages"] == 3
    assert result["top1_accuracy"] == pytest.approx(2 / 3)
    assert result["top3_recall"] == 1.0
    # micro: tp = 2 (0A, 2B), fp = 0, fn = 2 (1C, 2C) -> P = 1, R = 0.5 -> F1 = 2/3
    assert result["micro_f1"] == pytest.approx(2 / 3)
    # macro: A 1.0, B 1.0, C 0.0 -> 2/3
    assert result["macro_f1"] == pytest.approx(2 / 3)
    # the one uncoded passage (row 3) got no code
    assert result["uncoded_kept_empty"] == 1.0
    assert result["per_code"]["C"]["support"] == 2


def write_csv(path, rows, *, encoding="utf-8"):
    with open(path, "w", encoding=encoding, newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


VALID = ["LA01", "LA02", "BR03"]


def test_read_labelled_csv_parses_separators_and_case(tmp_path):
    path = write_csv(tmp_path / "gold.csv", [
        ["text", "codes", "council", "interview"],
        ["semicolons", "LA01;BR03", "C01", "C01-I1"],
        ["commas", "la01, br03", "C01", "C01-I2"],
        ["spaces", "LA02 LA01", "C02", "C02-I1"],
        ["none", "", "C02", "C02-I2"],
        ["multi\nline text", "  LA02 ; ", "C03", "C03-I1"],
    ], encoding="utf-8-sig")
    rows = read_labelled_csv(path, VALID)
    assert rows == [
        LabelledPassage("semicolons", ("LA01", "BR03"), "C01", "C01-I1"),
        LabelledPassage("commas", ("LA01", "BR03"), "C01", "C01-I2"),
        LabelledPassage("spaces", ("LA02", "LA01"), "C02", "C02-I1"),
        LabelledPassage("none", (), "C02", "C02-I2"),
        LabelledPassage("multi\nline text", ("LA02",), "C03", "C03-I1"),
    ]


def test_read_labelled_csv_without_optional_columns(tmp_path):
    path = write_csv(tmp_path / "gold.csv", [["codes", "text"], ["LA01", "hello"]])
    assert read_labelled_csv(path, VALID) == [LabelledPassage("hello", ("LA01",), "", "")]


def test_read_labelled_csv_rejects_unknown_code_with_its_line(tmp_path):
    path = write_csv(tmp_path / "gold.csv", [
        ["text", "codes"],
        ["fine", "LA01"],      # line 2
        ["also fine", ""],     # line 3
        ["bad", "LA01;xx99"],  # line 4
    ])
    with pytest.raises(QcodeError) as caught:
        read_labelled_csv(path, VALID)
    assert str(caught.value) == f"{path}, line 4: unknown code id(s) XX99"


def test_read_labelled_csv_needs_text_and_codes(tmp_path):
    path = write_csv(tmp_path / "gold.csv", [["text", "labels"], ["x", "LA01"]])
    with pytest.raises(QcodeError, match="needs the columns 'text' and 'codes'"):
        read_labelled_csv(path, VALID)


def test_read_the_shipped_dev_set(codebook):
    from pipeline.config import PROJECT_ROOT

    rows = read_labelled_csv(PROJECT_ROOT / "bench" / "dev_set.csv", codebook.ids)
    assert rows[0].codes == ("LA02",) and rows[0].council == "C09"
    assert rows[1].codes == ("LA04", "LA14")
    assert all(set(r.codes) <= set(codebook.ids) for r in rows)


def test_indicator_matrix():
    matrix = indicator_matrix([("LA01",), (), ("BR03", "LA01")], ["BR03", "LA01"])
    assert matrix.dtype == bool
    assert matrix.tolist() == [[False, True], [False, False], [True, True]]
    assert indicator_matrix([], ["A"]).shape == (0, 1)
