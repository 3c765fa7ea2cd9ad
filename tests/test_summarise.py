"""pipeline/summarise.py: per-council summaries and the councils-by-code matrix."""

from __future__ import annotations

from pipeline.schemas import Code, Codebook, CodedPassage
from pipeline.summarise import SUMMARY_COLUMNS, council_summary, councils_by_code, strongest_passages

# Codebook order interleaves two framework areas; summaries group them, areas in order of first appearance.
BOOK = Codebook("test", "v1", (
    Code("LA02", "leadership action", "Partnerships", "d", "cross-boundary working"),
    Code("BR01", "barrier", "Austerity", "d", "external context"),
    Code("LA01", "leadership action", "Vision", "d", "cross-boundary working"),
    Code("BR02", "barrier", "Regulation", "d", "external context"),
))


def passage(pid, interview, applied, scores, council="Hollins Vale", text=None):
    return CodedPassage(pid, council, interview, text or f"text of {pid}", scores=scores, applied=tuple(applied))


PASSAGES = [
    passage("p1", "I1", ["LA01"], {"LA01": 0.5}),
    passage("p2", "I1", ["LA01", "BR01"], {"LA01": 0.8, "BR01": 0.6}),
    passage("p3", "I2", ["LA01"], {"LA01": 0.7, "BR01": 0.2}),
    passage("p4", "I2", [], {"BR01": 0.35}),  # not coded: not counted in the share
]


def test_council_summary_counts_and_examples():
    rows = council_summary(PASSAGES, BOOK)
    assert all(tuple(r) == SUMMARY_COLUMNS for r in rows)
    by_id = {r["code_id"]: r for r in rows}
    # LA01: p1, p2, p3 -> 3 passages in 2 interviews; 3 coded passages in all -> share 3/3 = 1.0.
    # Examples are the two highest LA01 scores: p2 (0.8) then p3 (0.7).
    assert by_id["LA01"] == {
        "code_id": "LA01", "family": "leadership action", "label": "Vision",
        "framework_area": "cross-boundary working", "passages": 3, "interviews": 2,
        "share_of_coded_passages": 1.0, "example_1": "text of p2", "example_2": "text of p3",
    }
    # BR01: applied to p2 only (p3's 0.2 and p4's 0.35 were not applied) -> share round(1/3, 3) = 0.333.
    assert by_id["BR01"]["passages"] == 1
    assert by_id["BR01"]["interviews"] == 1
    assert by_id["BR01"]["share_of_coded_passages"] == 0.333
    assert (by_id["BR01"]["example_1"], by_id["BR01"]["example_2"]) == ("text of p2", "")


def test_codes_with_no_passages_get_zero_rows():
    rows = {r["code_id"]: r for r in council_summary(PASSAGES, BOOK)}
    for code_id in ("LA02", "BR02"):
        assert (rows[code_id]["passages"], rows[code_id]["interviews"], rows[code_id]["share_of_coded_passages"],
                rows[code_id]["example_1"], rows[code_id]["example_2"]) == (0, 0, 0.0, "", "")


def test_nothing_coded_gives_all_zero_shares():
    rows = council_summary([passage("p1", "I1", [], {"LA01": 0.1})], BOOK)
    assert [r["passages"] for r in rows] == [0, 0, 0, 0]
    assert [r["share_of_coded_passages"] for r in rows] == [0.0] * 4
    assert council_summary([], BOOK)[0]["share_of_coded_passages"] == 0.0


def test_rows_grouped_by_framework_area():
    rows = council_summary(PASSAGES, BOOK)
    # cross-boundary working first (LA02 comes first in the book), ids sorted within an area.
    assert [(r["framework_area"], r["code_id"]) for r in rows] == [
        ("cross-boundary working", "LA01"), ("cross-boundary working", "LA02"),
        ("external context", "BR01"), ("external context", "BR02"),
    ]


def test_shipped_codebook_areas_are_contiguous(codebook):
    rows = council_summary(PASSAGES, codebook)
    assert sorted(r["code_id"] for r in rows) == sorted(codebook.ids)
    areas = [r["framework_area"] for r in rows]
    seen_order = list(dict.fromkeys(areas))
    assert seen_order == list(dict.fromkeys(c.framework_area for c in codebook.codes))
    # Contiguous: each area appears in one run.
    runs = [a for i, a in enumerate(areas) if i == 0 or areas[i - 1] != a]
    assert runs == seen_order
    assert [r["code_id"] for r in rows[:2]] == ["BR08", "LA01"]  # both "key drivers: vision and leadership"


def test_councils_by_code_counts_passages_and_councils():
    passages = [
        passage("a1", "W1", ["LA01"], {}, council="Westmarch"),
        passage("a2", "W1", ["LA01", "BR02"], {}, council="Westmarch"),
        passage("b1", "H1", ["LA01"], {}, council="Avonmouth"),
        passage("c1", "C1", [], {}, council="Calder"),  # nothing coded: still a row of zeros
    ]
    header, rows = councils_by_code(passages, BOOK)
    assert header == ["council", "LA02", "BR01", "LA01", "BR02"]  # codebook order
    assert rows == [
        ["Avonmouth", 0, 0, 1, 0],
        ["Calder", 0, 0, 0, 0],
        ["Westmarch", 0, 0, 2, 1],
        # LA01 in Avonmouth and Westmarch -> 2 councils; BR02 in Westmarch only -> 1
        ["councils with code", 0, 0, 2, 1],
    ]


def test_councils_by_code_of_nothing():
    header, rows = councils_by_code([], BOOK)
    assert header == ["council", "LA02", "BR01", "LA01", "BR02"]
    assert rows == [["councils with code", 0, 0, 0, 0]]


def test_strongest_passages_put_reviewed_ones_first():
    model = CodedPassage("m", "C", "I", "model", scores={"LA01": 0.9}, applied=("LA01",))
    weak = CodedPassage("w", "C", "I", "weak", scores={"LA01": 0.3}, applied=("LA01",))
    gold = CodedPassage("g", "C", "I", "gold", scores={"LA01": 0.1}, applied=(), gold=("LA01",), reviewer="Ana")
    overruled = CodedPassage("o", "C", "I", "overruled", scores={"LA01": 0.95}, applied=("LA01",), gold=())
    assert [p.passage_id for p in strongest_passages([weak, model, overruled, gold], "LA01", 3)] == ["g", "m", "w"]
    assert [p.passage_id for p in strongest_passages([weak, model, overruled, gold], "LA01", 1)] == ["g"]


def test_a_code_s_examples_are_passages_mainly_about_it_before_side_mentions():
    # p2 reaches BR01 at 0.6 but is mainly LA01 (0.8); p5 is mainly BR01 at a lower BR01 score.
    mainly_br01 = passage("p5", "I3", ["BR01"], {"BR01": 0.4, "LA01": 0.1})
    rows = {r["code_id"]: r for r in council_summary(PASSAGES + [mainly_br01], BOOK)}
    assert (rows["BR01"]["example_1"], rows["BR01"]["example_2"]) == ("text of p5", "text of p2")
    assert (rows["LA01"]["example_1"], rows["LA01"]["example_2"]) == ("text of p2", "text of p3")
