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


def strongest_passages(passages: list[CodedPassage], code_id: str, limit: int) -> list[CodedPassage]:
    """The passages coded ``code_id`` that best show it: reviewer-confirmed first, then those whose main code it
    is, then by the model's score.

    Ranking by score alone showed, as a code's strongest example, a passage
    mainly about something else that the code also reached (a passage about
    sceptical councillors under "bold, united leadership").

    Examples
    --------
    >>> main = CodedPassage("p1", "X", "X-1", "a", scores={"LA01": 0.5, "BR08": 0.3}, applied=("LA01", "BR08"))
    >>> side = CodedPassage("p2", "X", "X-1", "b", scores={"LA01": 0.6, "BR08": 0.7}, applied=("LA01", "BR08"))
    >>> [p.passage_id for p in strongest_passages([side, main], "LA01", 2)]
    ['p1', 'p2']
    """
    def rank(p: CodedPassage) -> tuple:
        score = p.scores.get(code_id, 0.0)
        is_main = all(score >= p.scores.get(other, 0.0) for other in p.codes)
        return (p.gold is None, not is_main, -score, p.passage_id)

    return sorted((p for p in passages if code_id in p.codes), key=rank)[:limit]


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
        hits = by_code.get(code.id, [])
        examples = strongest_passages(hits, code.id, 2)
        rows.append({
            "code_id": code.id, "family": code.family, "label": code.label,
            "framework_area": code.framework_area, "passages": len(hits),
            "interviews": len({p.interview_id for p in hits}),
            "share_of_coded_passages": round(len(hits) / len(coded), 3) if coded else 0.0,
            "example_1": examples[0].text if examples else "",
            "example_2": examples[1].text if len(examples) > 1 else "",
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
