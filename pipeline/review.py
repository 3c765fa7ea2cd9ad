"""Review CSVs: one row per respondent passage for a reviewer to check and correct."""

from __future__ import annotations

from pipeline.schemas import Codebook, CodedPassage

REVIEW_COLUMNS = ("passage_id", "council", "interview_id", "respondent_role", "round", "question", "text",
                  "suggested", "codes", "code_labels", "reviewed", "reviewer", "note")
CODE_SEPARATOR = "; "


def format_suggestions(scores: dict[str, float]) -> str:
    """``LA01=0.82; BR03=0.55``: strongest first.

    Examples
    --------
    >>> format_suggestions({"BR03": 0.551, "LA01": 0.82})
    'LA01=0.82; BR03=0.55'
    """
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return CODE_SEPARATOR.join(f"{code}={score:.2f}" for code, score in ordered)


def review_rows(passages: list[CodedPassage], codebook: Codebook) -> list[list[str]]:
    """Rows in REVIEW_COLUMNS order, in transcript order as given."""
    labels = {c.id: c.label for c in codebook.codes}
    rows = []
    for p in passages:
        rows.append([
            p.passage_id, p.council, p.interview_id, p.respondent_role, p.round, p.question or "", p.text,
            format_suggestions(p.scores),
            CODE_SEPARATOR.join(p.applied),
            CODE_SEPARATOR.join(labels.get(c, c) for c in p.applied),
            "", "", "",
        ])
    return rows
