"""Agreement and quality figures between coders: pure functions over 0/1 matrices and scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class F1Report:
    per_code: dict[str, dict[str, float]]
    micro_f1: float
    macro_f1: float


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
