"""Coders that turn passage embeddings into multi-label code suggestions.

``ZeroShotCoder`` needs no reviewed data: it is fitted on the codebook itself
(each code's label and definition, plus its example utterances, and the
uncoded examples as negatives) and scores a passage by how close it sits to
each code's nearest examples. It follows the scikit-learn estimator contract,
so later coders trained on gold can be compared and swapped with it.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from pipeline.embed import EmbeddingCache, Embedder, embed_with_cache
from pipeline.schemas import Codebook

NO_CODE = ""


def codebook_training_set(codebook: Codebook) -> tuple[list[str], list[str]]:
    """Texts describing each code (label + definition, examples) and their code ids; uncoded examples get ``NO_CODE``."""
    texts: list[str] = []
    labels: list[str] = []
    for code in codebook.codes:
        texts.append(f"{code.label}. {code.definition}")
        labels.append(code.id)
        for example in code.examples:
            texts.append(example)
            labels.append(code.id)
    for example in codebook.uncoded_examples:
        texts.append(example)
        labels.append(NO_CODE)
    return texts, labels


def fit_zero_shot_coder(codebook: Codebook, embedder: Embedder, cache: EmbeddingCache, **params) -> tuple["ZeroShotCoder", str]:
    """A zero-shot coder for this codebook and model, and its coder id (which changes when either does)."""
    texts, labels = codebook_training_set(codebook)
    vectors, _ = embed_with_cache(texts, embedder, cache)
    coder = ZeroShotCoder(**params).fit(vectors, labels)
    return coder, f"zero-shot:{embedder.model_id}:{coder.fingerprint()}"


class ZeroShotCoder(BaseEstimator):
    """Nearest-centroid coder fitted on the codebook's own descriptions and examples.

    Each code is represented by the normalised mean of its prototypes (its
    label and definition, and its example utterances); a passage's score for a
    code is its cosine similarity to that centroid. On our development set
    this beat nearest-example voting and a logistic head on the examples (see
    README, "Coding quality"). A code is applied when its score reaches the
    code's threshold and lies within ``margin`` of the passage's best score,
    at most ``max_codes`` per passage. Per-code thresholds are calibrated in
    ``fit`` by leave-one-out over the prototypes (each scored against
    centroids built without it), choosing the cut-off with the best F1, moved
    by ``threshold_shift`` and kept within ``threshold_bounds``. A passage
    closer to the uncoded examples' centroid than to any code gets no code.

    Parameters
    ----------
    margin : float, default=0.05
    max_codes : int, default=3
    threshold_shift : float, default=-0.05
        Real interview speech sits further from every centroid than the
        codebook's tidy examples do; -0.05 matched the development set's
        number of codes per passage (about one).
    threshold_bounds : tuple of float, default=(0.2, 0.7)

    Attributes
    ----------
    classes_ : ndarray of str, the code ids, in column order of scores.
    centroids_ : ndarray of shape (n_codes, n_features)
    thresholds_ : ndarray of float, one per code.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=float)
    >>> coder = ZeroShotCoder().fit(X, ["LA01", "LA01", "BR01", "BR01"])
    >>> coder.classes_.tolist()
    ['BR01', 'LA01']
    >>> coder.predict(np.array([[0.95, 0.05]])).tolist()
    [[0, 1]]
    """

    def __init__(self, *, margin: float = 0.05, max_codes: int = 3, threshold_shift: float = -0.05,
                 threshold_bounds: tuple[float, float] = (0.2, 0.7)):
        self.margin = margin
        self.max_codes = max_codes
        self.threshold_shift = threshold_shift
        self.threshold_bounds = threshold_bounds

    def fit(self, X, y):
        """Build centroids and calibrate thresholds; ``y`` holds one code id (or "" for uncoded) per row."""
        X = np.asarray(X, dtype=np.float64)
        y = np.array(["" if label is None else str(label) for label in y], dtype=object)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be 2-D with one row per label; got {X.shape} and {len(y)} labels")
        if not isinstance(self.max_codes, int) or self.max_codes < 1:
            raise ValueError(f"max_codes must be a positive integer, got {self.max_codes!r}")
        if not 0.0 <= self.margin <= 2.0:
            raise ValueError(f"margin must be between 0 and 2, got {self.margin!r}")
        low, high = self.threshold_bounds
        if not -1.0 <= low <= high <= 1.0:
            raise ValueError(f"threshold_bounds must satisfy -1 <= low <= high <= 1, got {self.threshold_bounds!r}")
        self.classes_ = np.array(sorted({label for label in y if label}), dtype=object)
        if len(self.classes_) == 0:
            raise ValueError("y names no code; at least one prototype must carry a code id")
        X = _unit_rows(X)
        self.n_features_in_ = X.shape[1]
        sums = np.stack([X[y == code].sum(axis=0) for code in self.classes_])
        counts = np.array([(y == code).sum() for code in self.classes_])
        self.centroids_ = _unit_rows(sums)
        uncoded = y == NO_CODE
        self.uncoded_centroid_ = _unit_rows(X[uncoded].sum(axis=0, keepdims=True))[0] if uncoded.any() else None

        # Leave-one-out: each prototype is scored against its own code's centroid built without it.
        loo = X @ self.centroids_.T
        for j, code in enumerate(self.classes_):
            own = np.flatnonzero(y == code)
            if counts[j] > 1:
                loo[own, j] = (_unit_rows(sums[j] - X[own]) * X[own]).sum(axis=1)
            else:
                loo[own, j] = -1.0
        self.thresholds_ = np.array([
            np.clip(_best_f1_threshold(loo[:, j], y == code) + self.threshold_shift, low, high)
            for j, code in enumerate(self.classes_)
        ])
        return self

    def score_codes(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(score per passage and code, similarity of each passage to the uncoded examples)."""
        check_is_fitted(self, "thresholds_")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[-1]} features; the coder was fitted with {self.n_features_in_}")
        X = _unit_rows(X)
        scores = X @ self.centroids_.T
        if self.uncoded_centroid_ is None:
            return scores, np.full(len(X), -np.inf)
        return scores, X @ self.uncoded_centroid_

    def decision_function(self, X) -> np.ndarray:
        """Score per (passage, code), in ``classes_`` order."""
        return self.score_codes(X)[0]

    def predict(self, X) -> np.ndarray:
        """0/1 indicator matrix of applied codes, in ``classes_`` order."""
        return self.apply_thresholds(*self.score_codes(X))

    def apply_thresholds(self, scores: np.ndarray, uncoded: np.ndarray | None = None) -> np.ndarray:
        """Applied codes from scores already computed."""
        best = scores.max(axis=1, keepdims=True)
        applied = (scores >= self.thresholds_) & (scores >= best - self.margin)
        if uncoded is not None:
            applied &= (uncoded < best[:, 0])[:, None]
        if self.max_codes < scores.shape[1]:
            rank = np.argsort(-scores, axis=1, kind="stable")
            allowed = np.zeros_like(applied)
            np.put_along_axis(allowed, rank[:, : self.max_codes], True, axis=1)
            applied &= allowed
        return applied.astype(np.int8)

    def fingerprint(self) -> str:
        """Short hash of parameters and centroids: a changed coder recodes, an unchanged one does not."""
        check_is_fitted(self, "thresholds_")
        digest = hashlib.sha256(json.dumps(self.get_params(), sort_keys=True, default=str).encode())
        digest.update(np.round(self.centroids_, 6).tobytes())
        digest.update(np.round(self.thresholds_, 6).tobytes())
        return digest.hexdigest()[:8]


def _unit_rows(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-12)


def _best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The cut-off on ``scores`` with the best F1 for the ``positive`` rows (midpoint between neighbours)."""
    order = np.argsort(-scores)
    sorted_scores, sorted_positive = scores[order], positive[order]
    true_positives = np.cumsum(sorted_positive)
    predicted = np.arange(1, len(scores) + 1)
    f1 = 2 * true_positives / (predicted + positive.sum())
    best = int(np.argmax(f1))
    below = sorted_scores[best + 1] if best + 1 < len(sorted_scores) else sorted_scores[best] - 0.01
    return float((sorted_scores[best] + below) / 2)


def shorten(text: str, limit: int = 90) -> str:
    """One line of at most ``limit`` characters, cut at a word boundary."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1].rsplit(" ", 1)[0] + "…"


def nearest_evidence(vectors: np.ndarray, codes_per_passage: list[list[str]], evidence_vectors: np.ndarray,
                     evidence_codes: list[tuple[str, ...]], evidence_texts: list[str],
                     evidence_ids: list[str] | None = None, passage_ids: list[str] | None = None) -> list[str]:
    """For each passage and each of its codes, the most similar evidence text carrying that code.

    Evidence is the codebook's examples and reviewed (gold) passages; a passage
    is never its own evidence. Returns one ``CODE: "text"`` string per passage.

    Examples
    --------
    >>> v = np.array([[1.0, 0.0]])
    >>> nearest_evidence(v, [["LA01"]], np.array([[0.9, 0.1], [0.0, 1.0]]), [("LA01",), ("LA01",)], ["near", "far"])
    ['LA01: "near"']
    """
    if len(evidence_vectors) == 0:
        return ["" for _ in codes_per_passage]
    similarity = _unit_rows(np.asarray(vectors, dtype=np.float64)) @ _unit_rows(np.asarray(evidence_vectors, dtype=np.float64)).T
    if evidence_ids is not None and passage_ids is not None:
        position = {eid: j for j, eid in enumerate(evidence_ids)}
        for i, pid in enumerate(passage_ids):
            if pid in position:
                similarity[i, position[pid]] = -np.inf
    members: dict[str, np.ndarray] = {}
    for code in {c for codes in codes_per_passage for c in codes}:
        members[code] = np.array([code in codes for codes in evidence_codes])
    result = []
    for i, codes in enumerate(codes_per_passage):
        parts = []
        for code in codes:
            candidates = np.where(members[code], similarity[i], -np.inf)
            best = int(np.argmax(candidates))
            if not np.isfinite(candidates[best]):
                continue
            parts.append(f'{code}: "{shorten(evidence_texts[best])}"')
        result.append("; ".join(parts))
    return result
