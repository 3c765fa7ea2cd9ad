"""pipeline/agreement.py and pipeline/evaluate.py against small cases computed by hand."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from pipeline.agreement import (cohen_kappa, compare_coders, interpret_alpha, krippendorff_alpha_nominal, multilabel_f1,
                                top_k_accuracy, top_k_recall)
from pipeline.errors import QcodeError
from pipeline.agreement import indicator_matrix
from pipeline.evaluate import LabelledPassage, evaluate_scores, read_labelled_csv

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


# Cohen's kappa and Krippendorff's alpha ------------------------------------

NAN = float("nan")


def test_perfect_agreement():
    a = [1, 0, 1, 1, 0]
    # observed 1; expected 0.6 * 0.6 + 0.4 * 0.4 = 0.52 -> (1 - 0.52) / (1 - 0.52) = 1
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    # all coincidences on the diagonal: D_o = 0 -> alpha = 1
    assert krippendorff_alpha_nominal(np.array([a, a]).T) == pytest.approx(1.0)
    # three nominal categories, three coders
    many = [0, 1, 2, 2, 1, 0]
    assert cohen_kappa(many, many) == pytest.approx(1.0)
    assert krippendorff_alpha_nominal(np.array([many, many, many]).T) == pytest.approx(1.0)


# Ten binary units; coder A says 1 once (unit 0), coder B says 1 twice (units 0 and 1): one disagreement.
ONE_OFF_A = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
ONE_OFF_B = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]


def test_kappa_one_disagreement_in_ten():
    # observed p_o = 9/10 = 0.9
    # expected p_e = P_A(1) P_B(1) + P_A(0) P_B(0) = 0.1 * 0.2 + 0.9 * 0.8 = 0.02 + 0.72 = 0.74
    # kappa = (0.9 - 0.74) / (1 - 0.74) = 0.16 / 0.26 = 0.615385
    assert cohen_kappa(ONE_OFF_A, ONE_OFF_B) == pytest.approx((0.9 - 0.74) / 0.26)
    assert cohen_kappa(ONE_OFF_A, ONE_OFF_B) == pytest.approx(0.6154, abs=5e-5)
    # symmetric in the two coders
    assert cohen_kappa(ONE_OFF_B, ONE_OFF_A) == pytest.approx(0.6154, abs=5e-5)


def test_alpha_one_disagreement_in_ten():
    # Coincidences: unit 0 (1,1) -> o_11 += 2; unit 1 (0,1) -> o_01 += 1, o_10 += 1; units 2-9 (0,0) -> o_00 += 16.
    # n_0 = 16 + 1 = 17, n_1 = 2 + 1 = 3, n = 20.
    # alpha = 1 - (n - 1) * (o_01 + o_10) / (n_0 n_1 + n_1 n_0) = 1 - 19 * 2 / (2 * 17 * 3) = 1 - 38/102 = 0.627451
    data = np.array([ONE_OFF_A, ONE_OFF_B], dtype=float).T
    assert krippendorff_alpha_nominal(data) == pytest.approx(1 - 38 / 102)
    assert krippendorff_alpha_nominal(data) == pytest.approx(0.6275, abs=5e-5)
    # the coders' order does not matter
    assert krippendorff_alpha_nominal(data[:, ::-1]) == pytest.approx(1 - 38 / 102)


def test_alpha_docstring_case_by_hand():
    # units (1,1), (1,0), (0,0), (0,0): o_11 = 2, o_10 = o_01 = 1, o_00 = 4; n_1 = 3, n_0 = 5, n = 8
    # alpha = 1 - 7 * 2 / (2 * 5 * 3) = 1 - 14/30 = 8/15 = 0.5333
    assert krippendorff_alpha_nominal([[1, 1], [1, 0], [0, 0], [0, 0]]) == pytest.approx(8 / 15)


def test_alpha_three_coders_with_missing_values():
    data = np.array([
        [1, 1, 1],        # m = 3: 3 * 3 - 3 = 6 ordered pairs, / (m - 1) = 2 -> o_11 += 3
        [0, 0, NAN],      # m = 2: o_00 += 2
        [1, 0, NAN],      # m = 2: o_10 += 1, o_01 += 1
        [0, 0, 0],        # m = 3: o_00 += 6 / 2 = 3
        [1, NAN, NAN],    # m = 1: not pairable, left out entirely
        [NAN, NAN, NAN],  # m = 0: left out
    ])
    # o_00 = 5, o_11 = 3, o_01 = o_10 = 1 -> n_0 = 6, n_1 = 4, n = 10
    # alpha = 1 - (n - 1) * 2 / (2 * n_0 * n_1) = 1 - 9 * 2 / 48 = 1 - 0.375 = 0.625
    assert krippendorff_alpha_nominal(data) == pytest.approx(0.625)
    # Dropping the unpairable units changes nothing, so they really are left out (with them n would be 11).
    assert krippendorff_alpha_nominal(data[:4]) == pytest.approx(0.625)


def test_alpha_below_zero_for_systematic_disagreement():
    # units (1,0), (1,0): o_10 = o_01 = 2, n_0 = n_1 = 2, n = 4 -> alpha = 1 - 3 * 4 / (2 * 2 * 2) = -0.5
    assert krippendorff_alpha_nominal([[1, 0], [1, 0]]) == pytest.approx(-0.5)
    # kappa: observed 0, expected 1 * 0 + 0 * 1 = 0 -> (0 - 0) / 1 = 0
    assert cohen_kappa([1, 1], [0, 0]) == 0.0


def test_kappa_three_categories_by_hand():
    a = [0, 1, 2, 0, 1, 2]
    b = [0, 1, 2, 0, 2, 1]
    # observed 4/6; each coder uses each category 2 times in 6 -> expected 3 * (1/3 * 1/3) = 1/3
    # kappa = (2/3 - 1/3) / (1 - 1/3) = 0.5
    assert cohen_kappa(a, b) == pytest.approx(0.5)
    # string labels work the same
    assert cohen_kappa([str(x) for x in a], [str(x) for x in b]) == pytest.approx(0.5)


def test_no_variation_is_nan():
    assert np.isnan(cohen_kappa([1, 1, 1], [1, 1, 1]))
    assert np.isnan(cohen_kappa([0, 0], [0, 0]))
    assert np.isnan(krippendorff_alpha_nominal([[1, 1], [1, 1], [1, 1]]))
    assert np.isnan(krippendorff_alpha_nominal([[0, 0, NAN], [0, NAN, 0]]))
    # nothing pairable at all
    assert np.isnan(krippendorff_alpha_nominal([[1, NAN], [NAN, 0]]))
    assert np.isnan(krippendorff_alpha_nominal(np.empty((0, 2))))
    assert interpret_alpha(NAN) == "n/a (no variation)"
    assert interpret_alpha(krippendorff_alpha_nominal([[1, 1], [1, 1]])).startswith("n/a")


def test_kappa_needs_equal_non_empty_sequences():
    with pytest.raises(ValueError, match="same, non-zero length"):
        cohen_kappa([1, 0], [1])
    with pytest.raises(ValueError, match="same, non-zero length"):
        cohen_kappa([], [])


@pytest.mark.parametrize("alpha, reading", [
    (1.0, "reliable"), (0.8, "reliable"), (0.95, "reliable"),
    (0.7999, "tentative"), (0.7, "tentative"), (0.667, "tentative"),
    (0.6669, "unreliable"), (0.5, "unreliable"), (0.0, "unreliable"), (-0.5, "unreliable"),
])
def test_interpret_alpha_thresholds(alpha, reading):
    assert interpret_alpha(alpha) == reading


@pytest.mark.parametrize("categories", [2, 4])
def test_kappa_matches_sklearn_on_a_random_case(categories):
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(20240611 + categories)
    a = rng.integers(0, categories, size=300)
    agree = rng.random(300) < 0.7
    b = np.where(agree, a, rng.integers(0, categories, size=300))
    expected = cohen_kappa_score(a, b)
    assert 0.3 < expected < 0.95  # a case with real but imperfect agreement
    assert cohen_kappa(a, b) == pytest.approx(expected, abs=1e-12)


def test_compare_coders_by_hand():
    reference = np.array([
        [1, 0, 0],
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 0],
    ])
    other = np.array([
        [1, 0, 0],
        [0, 0, 0],
        [0, 1, 0],
        [0, 1, 0],
    ])
    result = compare_coders(reference, other, ["A", "B", "C"])
    assert result["passages"] == 4
    a, b, c = result["per_code"]
    # A: reference 1,1,0,0; other 1,0,0,0 -> tp 1, fp 0, fn 1: P 1, R 0.5, F1 2/3
    #    kappa: p_o = 3/4, p_e = 0.5 * 0.25 + 0.5 * 0.75 = 0.5 -> 0.5
    #    alpha: units (1,1), (1,0), (0,0), (0,0) -> 8/15 (as in the docstring case) -> unreliable
    assert a == pytest.approx({"code_id": "A", "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2,
                               "support_other": 1, "kappa": 0.5, "alpha": 8 / 15, "alpha_reading": "unreliable"})
    # B: reference 0,0,1,0; other 0,0,1,1 -> tp 1, fp 1, fn 0: P 0.5, R 1, F1 2/3
    #    kappa: p_o = 3/4, p_e = 0.25 * 0.5 + 0.75 * 0.5 = 0.5 -> 0.5; alpha mirrors A -> 8/15
    assert b == pytest.approx({"code_id": "B", "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1,
                               "support_other": 2, "kappa": 0.5, "alpha": 8 / 15, "alpha_reading": "unreliable"})
    # C: never used by either coder -> no variation
    assert (c["code_id"], c["support"], c["support_other"], c["f1"]) == ("C", 0, 0, 0.0)
    assert np.isnan(c["kappa"]) and np.isnan(c["alpha"])
    assert c["alpha_reading"] == "n/a (no variation)"
    # micro: tp 2, fp 1, fn 1 -> P = R = 2/3 -> F1 2/3; macro over A and B only (C has no support) = 2/3
    assert result["micro_f1"] == pytest.approx(2 / 3)
    assert result["macro_f1"] == pytest.approx(2 / 3)


def test_compare_coders_perfect_and_reliable():
    matrix = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    result = compare_coders(matrix, matrix, ["A", "B"])
    assert [(r["kappa"], r["alpha"], r["alpha_reading"]) for r in result["per_code"]] == \
        [(1.0, 1.0, "reliable"), (1.0, 1.0, "reliable")]
    assert (result["micro_f1"], result["macro_f1"]) == (1.0, 1.0)


def test_compare_coders_with_no_passages():
    result = compare_coders(np.zeros((0, 2)), np.zeros((0, 2)), ["A", "B"])
    assert result["passages"] == 0
    assert (result["micro_f1"], result["macro_f1"]) == (0.0, 0.0)
    for row in result["per_code"]:
        assert np.isnan(row["kappa"]) and np.isnan(row["alpha"])
        assert row["alpha_reading"] == "n/a (no variation)"
