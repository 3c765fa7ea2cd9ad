"""Agreement and quality figures between coders: pure functions over 0/1 matrices and scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.schemas import CodedPassage


@dataclass(frozen=True)
class F1Report:
    per_code: dict[str, dict[str, float]]
    micro_f1: float
    macro_f1: float


def indicator_matrix(labels, code_ids) -> np.ndarray:
    """Passages x codes, True where a passage's labels hold the code."""
    column = {c: j for j, c in enumerate(code_ids)}
    matrix = np.zeros((len(labels), len(code_ids)), dtype=bool)
    for i, codes in enumerate(labels):
        for c in codes:
            matrix[i, column[c]] = True
    return matrix


def _f1(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def multilabel_f1(truth: np.ndarray, predicted: np.ndarray, code_ids) -> F1Report:
    """Per-code precision, recall and F1, with micro and macro F1 over codes that occur in ``truth``.

    Examples
    --------
    >>> r = multilabel_f1(np.array([[1, 0], [0, 1]]), np.array([[1, 1], [0, 1]]), ["A", "B"])
    >>> round(r.micro_f1, 3), round(r.per_code["B"]["precision"], 2)
    (0.8, 0.5)
    """
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    per_code = {}
    for j, code in enumerate(code_ids):
        tp = float((truth[:, j] & predicted[:, j]).sum())
        fp = float((~truth[:, j] & predicted[:, j]).sum())
        fn = float((truth[:, j] & ~predicted[:, j]).sum())
        p, r, f = _f1(tp, fp, fn)
        per_code[code] = {"precision": p, "recall": r, "f1": f, "support": int(truth[:, j].sum())}
    tp = float((truth & predicted).sum())
    fp = float((~truth & predicted).sum())
    fn = float((truth & ~predicted).sum())
    present = [v["f1"] for v in per_code.values() if v["support"]]
    return F1Report(per_code=per_code, micro_f1=_f1(tp, fp, fn)[2],
                    macro_f1=float(np.mean(present)) if present else 0.0)


def top_k_accuracy(truth: np.ndarray, scores: np.ndarray, k: int = 1) -> float:
    """Share of passages with at least one true code whose true code is ranked in the top ``k``."""
    truth = np.asarray(truth, bool)
    coded = truth.any(axis=1)
    if not coded.any():
        return 0.0
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(truth, top, axis=1).any(axis=1)
    return float(hits[coded].mean())


def top_k_recall(truth: np.ndarray, scores: np.ndarray, k: int = 3) -> float:
    """Share of all true (passage, code) pairs whose code is ranked in the passage's top ``k``."""
    truth = np.asarray(truth, bool)
    if not truth.any():
        return 0.0
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    in_top = np.zeros_like(truth)
    np.put_along_axis(in_top, top, True, axis=1)
    return float((truth & in_top).sum() / truth.sum())


def cohen_kappa(a, b) -> float:
    """Cohen's kappa between two coders' labels for the same units (nan when chance agreement is total).

    Examples
    --------
    >>> round(cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]), 3)
    0.5
    """
    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError("kappa needs two label sequences of the same, non-zero length")
    observed = float((a == b).mean())
    categories = np.union1d(a, b)
    expected = float(sum((a == c).mean() * (b == c).mean() for c in categories))
    if expected == 1.0:
        return float("nan")
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha_nominal(data) -> float:
    """Krippendorff's alpha for nominal data: ``data`` is units x coders, np.nan where a coder gave no value.

    Units with fewer than two values are not pairable and are left out; nan
    when the pairable values show no variation at all.

    Examples
    --------
    >>> round(krippendorff_alpha_nominal([[1, 1], [1, 0], [0, 0], [0, 0]]), 3)
    0.533
    """
    data = np.asarray(data, dtype=float)
    categories = np.unique(data[~np.isnan(data)])
    index = {c: i for i, c in enumerate(categories)}
    coincidences = np.zeros((len(categories), len(categories)))
    for unit in data:
        values = unit[~np.isnan(unit)]
        m = len(values)
        if m < 2:
            continue
        counts = np.zeros(len(categories))
        for v in values:
            counts[index[v]] += 1
        pairs = np.outer(counts, counts) - np.diag(counts)  # ordered pairs of values from different coders
        coincidences += pairs / (m - 1)
    totals = coincidences.sum(axis=1)
    n = totals.sum()
    disagreement_observed = coincidences.sum() - np.trace(coincidences)
    disagreement_expected = (np.outer(totals, totals).sum() - (totals ** 2).sum()) / (n - 1) if n > 1 else 0.0
    if disagreement_expected == 0:
        return float("nan")
    return float(1.0 - disagreement_observed / disagreement_expected)


def interpret_alpha(alpha: float) -> str:
    """Krippendorff's conventional reading: >= 0.8 reliable, >= 0.667 tentative."""
    if alpha != alpha:  # nan
        return "n/a (no variation)"
    if alpha >= 0.8:
        return "reliable"
    if alpha >= 0.667:
        return "tentative"
    return "unreliable"


def compare_coders(reference: np.ndarray, other: np.ndarray, code_ids) -> dict:
    """Per-code precision, recall, F1 (``other`` judged against ``reference``), Cohen's kappa and
    Krippendorff's alpha; micro and macro F1 overall."""
    reference, other = np.asarray(reference, bool), np.asarray(other, bool)
    f1 = multilabel_f1(reference, other, code_ids)
    rows = []
    for j, code in enumerate(code_ids):
        alpha = krippendorff_alpha_nominal(np.stack([reference[:, j], other[:, j]], axis=1).astype(float))
        rows.append({"code_id": code, **f1.per_code[code], "support_other": int(other[:, j].sum()),
                     "kappa": cohen_kappa(reference[:, j], other[:, j]) if len(reference) else float("nan"),
                     "alpha": alpha, "alpha_reading": interpret_alpha(alpha)})
    return {"passages": int(len(reference)), "per_code": rows, "micro_f1": f1.micro_f1, "macro_f1": f1.macro_f1}


def agreement_figures(passages: list[CodedPassage], reviewer_codes: dict[str, dict[str, tuple[str, ...]]], code_ids,
                      council: str | None = None) -> dict:
    """Model vs reviewers on the reviewed ``passages``, and reviewer vs reviewer where two reviewers coded one.

    ``reviewer_codes`` maps a passage id to each reviewer's newest codes for it
    (passages not in ``passages`` are left out).
    """
    code_ids = list(code_ids)
    by_id = {p.passage_id: p for p in passages}
    by_reviewer = {pid: codes for pid, codes in reviewer_codes.items() if pid in by_id}
    reviewed = [p for p in passages if p.gold is not None]
    report = {"council": council or "all", "reviewed_passages": len(reviewed), "model_vs_reviewers": None,
              "reviewer_pairs": []}
    if reviewed:
        report["model_vs_reviewers"] = compare_coders(indicator_matrix([p.gold for p in reviewed], code_ids),
                                                      indicator_matrix([p.applied for p in reviewed], code_ids), code_ids)
    pairs: dict[tuple[str, str], list[str]] = {}
    for pid, decisions in by_reviewer.items():
        names = sorted(decisions)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                pairs.setdefault((a, b), []).append(pid)
    for (a, b), pids in sorted(pairs.items()):
        stats = compare_coders(indicator_matrix([by_reviewer[p][a] for p in pids], code_ids),
                               indicator_matrix([by_reviewer[p][b] for p in pids], code_ids), code_ids)
        stats.update(reviewer_a=a, reviewer_b=b, disagreements=[
            {"passage_id": p, "council": by_id[p].council, "interview_id": by_id[p].interview_id,
             "text": by_id[p].text, "codes_a": "; ".join(by_reviewer[p][a]), "codes_b": "; ".join(by_reviewer[p][b])}
            for p in pids if set(by_reviewer[p][a]) != set(by_reviewer[p][b])])
        report["reviewer_pairs"].append(stats)
    return report
