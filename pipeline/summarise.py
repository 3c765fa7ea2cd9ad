"""Per-council and cross-council tables: pure functions over passages and codings."""

from __future__ import annotations

from collections import defaultdict
from pipeline.schemas import Codebook, CodedPassage

SUMMARY_COLUMNS = ("code_id", "family", "label", "framework_area", "passages", "interviews",
                   "share_of_coded_passages", "example_1", "example_2")


def _area_order(codebook: Codebook) -> dict[str, int]:
    order: dict[str, int] = {}
    for code in codebook.codes:
        order.setdefault(code.framework_area, len(order))
    return order


def council_summary(passages: list[CodedPassage], codebook: Codebook) -> list[dict]:
    """One row per code for one council's passages, grouped by framework area.

    Examples
    --------
    >>> from pipeline.schemas import Code, Codebook
    >>> book = Codebook("b", "v1", (Code("LA01", "leadership action", "Vision", "d", "vision"),))
    >>> passage = CodedPassage("p1", "X", "X-1", "We agreed a vision.", scores={"LA01": 0.6}, applied=("LA01",))
    >>> rows = council_summary([passage], book)
    >>> rows[0]["passages"], rows[0]["share_of_coded_passages"], rows[0]["example_1"]
    (1, 1.0, 'We agreed a vision.')
    """
    coded = [p for p in passages if p.codes]
    by_code: dict[str, list[CodedPassage]] = defaultdict(list)
    for p in coded:
        for code_id in p.codes:
            by_code[code_id].append(p)
    areas = _area_order(codebook)
    rows = []
    for code in sorted(codebook.codes, key=lambda c: (areas[c.framework_area], c.id)):
        hits = sorted(by_code.get(code.id, []), key=lambda p: -p.scores.get(code.id, 0.0))
        rows.append({
            "code_id": code.id, "family": code.family, "label": code.label,
            "framework_area": code.framework_area, "passages": len(hits),
            "interviews": len({p.interview_id for p in hits}),
            "share_of_coded_passages": round(len(hits) / len(coded), 3) if coded else 0.0,
            "example_1": hits[0].text if hits else "",
            "example_2": hits[1].text if len(hits) > 1 else "",
        })
    return rows


def councils_by_code(passages: list[CodedPassage], codebook: Codebook) -> tuple[list[str], list[list]]:
    """Matrix of councils (rows) by codes (columns) counting passages, plus a final row counting councils per code."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for p in passages:
        counts[p.council]  # every council gets a row, even with nothing coded
        for code_id in p.codes:
            counts[p.council][code_id] += 1
    header = ["council", *codebook.ids]
    rows = [[council, *(counts[council].get(c, 0) for c in codebook.ids)] for council in sorted(counts)]
    rows.append(["councils with code", *(sum(1 for council in counts if counts[council].get(c, 0)) for c in codebook.ids)])
    return header, rows
