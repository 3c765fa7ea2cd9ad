"""Learning from reviewers: training sets from gold, cross-validation, model cards and the model registry.

A trained model is a folder ``models/<version>/`` holding ``model.joblib``
(the fitted TrainedCoder), ``card.json`` and ``card.md``. Which model is in
use is recorded in the database (the active coder), so a model that lost the
comparison stays on disk, documented, but never codes anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GroupKFold

from pipeline.agreement import multilabel_f1, top_k_accuracy
from pipeline.classify import NO_CODE, TrainedCoder, ZeroShotCoder, codebook_training_set, prototype_weights
from pipeline.errors import QcodeError
from pipeline.agreement import indicator_matrix
from pipeline.schemas import Codebook

ARTIFACT, CARD_JSON, CARD_MD = "model.joblib", "card.json", "card.md"
CODEBOOK_GROUP = "__codebook__"


class ModelMismatchError(QcodeError):
    """A stored model was trained for another embedding model or codebook version."""


@dataclass(frozen=True)
class TrainingSet:
    """Codebook examples and gold passages as one matrix, with what is needed to split it honestly."""

    X: np.ndarray
    Y: np.ndarray
    is_gold: np.ndarray
    groups: np.ndarray
    code_ids: tuple[str, ...]
    data_hash: str
    sample_weight: np.ndarray
    """Each codebook row's prototype weight (``prototype_weights``); 1 for gold rows."""
    texts: tuple[str, ...] = ()
    """Each row's text, so a fold can be encoded again by an encoder tuned on its training gold."""

    @property
    def gold_counts(self) -> dict[str, int]:
        return dict(zip(self.code_ids, map(int, self.Y[self.is_gold].sum(axis=0))))


def training_set(codebook: Codebook, example_vectors: np.ndarray, gold_vectors: np.ndarray,
                 gold_codes: list[tuple[str, ...]], gold_groups: list[str], gold_ids: list[str],
                 gold_texts: list[str] = ()) -> TrainingSet:
    """Stack the codebook's examples (never evidence, always in training) and gold (a reviewed passage with
    no code is a negative for every code)."""
    texts, labels = codebook_training_set(codebook)
    if len(texts) != len(example_vectors):
        raise ValueError("example_vectors must have one row per codebook_training_set text")
    code_ids = tuple(sorted(codebook.ids))
    example_codes = [(label,) if label != NO_CODE else () for label in labels]
    X = np.vstack([example_vectors, gold_vectors]) if len(gold_vectors) else np.asarray(example_vectors)
    Y = indicator_matrix(example_codes + list(gold_codes), code_ids)
    is_gold = np.r_[np.zeros(len(example_vectors), bool), np.ones(len(gold_vectors), bool)]
    groups = np.array([CODEBOOK_GROUP] * len(example_vectors) + list(gold_groups), dtype=object)
    weights = np.r_[prototype_weights(codebook), np.ones(len(gold_vectors))]
    return TrainingSet(X, Y, is_gold, groups, code_ids, gold_hash(codebook.version, gold_ids, gold_codes), weights,
                       tuple(texts) + tuple(gold_texts) if len(gold_texts) else ())


def gold_hash(codebook_version: str, gold_ids, gold_codes) -> str:
    """Identifies the training data: the codebook version and every reviewed passage's codes."""
    digest = hashlib.sha256(codebook_version.encode())
    for pid, codes in sorted(zip(gold_ids, (tuple(c) for c in gold_codes))):
        digest.update(f"{pid}:{','.join(sorted(codes))};".encode())
    return digest.hexdigest()[:12]


def gold_folds(data: TrainingSet, n_splits: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out gold rows) per fold: gold split by group, codebook examples always in training."""
    gold_rows = np.flatnonzero(data.is_gold)
    n_groups = len(np.unique(data.groups[gold_rows]))
    if n_groups < 2:
        raise QcodeError(f"cross-validation needs gold from at least 2 interviews; there is gold from {n_groups}. "
                         "Review passages from more interviews and import them first")
    folds = []
    for _, held in GroupKFold(n_splits=min(n_splits, n_groups)).split(gold_rows, groups=data.groups[gold_rows]):
        train = np.ones(len(data.X), bool)
        train[gold_rows[held]] = False
        folds.append((np.flatnonzero(train), gold_rows[held]))
    return folds


def cross_validated_predictions(coder, data: TrainingSet, folds, reencode=None
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold (scores, applied, held-out rows) of a coder configuration; a ZeroShotCoder is not refitted
    because it learns nothing from gold.

    ``reencode(train_rows)``, when given, returns every row's vector from an
    encoder tuned on those training rows' gold only, so the held-out gold
    never shapes the encoder that codes it.
    """
    held_rows = np.concatenate([held for _, held in folds])
    scores = np.zeros((len(held_rows), len(data.code_ids)))
    applied = np.zeros((len(held_rows), len(data.code_ids)), dtype=np.int8)
    at = 0
    for train, held in folds:
        X = reencode(train) if reencode else data.X
        if isinstance(coder, ZeroShotCoder):
            model = coder
        else:
            model = clone(coder).fit(X[train], data.Y[train], code_ids=data.code_ids,
                                     is_gold=data.is_gold[train], groups=data.groups[train],
                                     sample_weight=data.sample_weight[train])
        s, uncoded = model.score_codes(X[held])
        scores[at:at + len(held)] = s
        applied[at:at + len(held)] = model.apply_thresholds(s, uncoded)
        at += len(held)
    return scores, applied, held_rows


def cv_metrics(coder, data: TrainingSet, folds, reencode=None) -> dict:
    """Macro and micro F1, top-1 accuracy and per-code figures of a coder configuration on the given folds."""
    scores, applied, held = cross_validated_predictions(coder, data, folds, reencode)
    report = multilabel_f1(data.Y[held], applied, data.code_ids)
    return {"macro_f1": report.macro_f1, "micro_f1": report.micro_f1,
            "top1_accuracy": top_k_accuracy(data.Y[held], scores, 1), "per_code": report.per_code,
            "held_out_passages": int(len(held))}


def not_worse(candidate: dict, active: dict) -> bool:
    """The promotion gate: a retrained coder replaces the active one only if it is no worse in macro F1
    (every code counts) and in top-1 accuracy (the main code of each passage) on the same folds.

    Macro F1 alone let a coder trained on two gold passages per code through while its top-1 on real
    report prose fell from 0.56 to 0.43 (bench/quality.py).

    Examples
    --------
    >>> not_worse({"macro_f1": 0.62, "top1_accuracy": 0.50}, {"macro_f1": 0.61, "top1_accuracy": 0.56})
    False
    >>> not_worse({"macro_f1": 0.62, "top1_accuracy": 0.56}, {"macro_f1": 0.61, "top1_accuracy": 0.56})
    True
    """
    return candidate["macro_f1"] >= active["macro_f1"] and candidate["top1_accuracy"] >= active["top1_accuracy"]


def model_version(data: TrainingSet, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%S')}-{data.data_hash[:6]}"


def model_card(*, version: str, coder: TrainedCoder, data: TrainingSet, embedding_model_id: str,
               codebook_version: str, candidate: dict, active: dict, active_id: str, promoted: bool,
               forced: bool, min_positives: int, base_model_id: str | None = None, encoder: dict | None = None) -> dict:
    """The model's card. ``embedding_model_id`` is the encoder the model reads; ``base_model_id`` the encoder
    qcode codes with before any training, which a gold-tuned ``encoder`` (its folder, settings, figures) was
    tuned from."""
    fallback = [c for c, n in data.gold_counts.items() if n < min_positives]
    margin = candidate["macro_f1"] - active["macro_f1"]
    verdict = (f"{'promoted' if promoted else 'not promoted'}: cross-validated macro F1 {candidate['macro_f1']:.3f} "
               f"vs {active['macro_f1']:.3f} for the active coder {active_id} ({margin:+.3f}), top-1 "
               f"{candidate['top1_accuracy']:.3f} vs {active['top1_accuracy']:.3f}"
               + (" -- promoted by --force" if forced and not not_worse(candidate, active) else ""))
    return {
        "version": version, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kind": "trained", "estimator": "TrainedCoder (per-code logistic regression blended with zero-shot)",
        "params": {k: v for k, v in coder.get_params(deep=True).items() if k != "zero_shot"},
        "embedding_model_id": embedding_model_id, "base_model_id": base_model_id or embedding_model_id,
        "encoder": encoder, "codebook_version": codebook_version,
        "training_data_hash": data.data_hash, "gold_passages": int(data.is_gold.sum()),
        "codebook_examples": int((~data.is_gold).sum()), "gold_positives_per_code": data.gold_counts,
        "zero_shot_fallback_codes": fallback, "thresholds": dict(zip(data.code_ids, map(float, coder.thresholds_))),
        "cross_validation": {"split": "by interview", "folds": None, "candidate": candidate, "active": active,
                             "active_coder": active_id},
        "promoted": promoted, "forced": forced, "verdict": verdict,
    }


def card_markdown(card: dict) -> str:
    cv = card["cross_validation"]
    lines = [
        f"# qcode model {card['version']}", "",
        f"- created: {card['created_at']}",
        f"- embedding model: `{card['embedding_model_id']}`"
        + (f", tuned on this model's gold from `{card['base_model_id']}` (`{card['encoder']['folder']}/`)"
           if card.get("encoder") else ""),
        f"- codebook version: `{card['codebook_version']}`",
        f"- training data: {card['gold_passages']} reviewed passages + {card['codebook_examples']} codebook examples "
        f"(hash `{card['training_data_hash']}`)",
        f"- zero-shot fallback (fewer than {card['params']['min_positives']} gold positives): "
        f"{', '.join(card['zero_shot_fallback_codes']) or 'none'}",
        f"- **{card['verdict']}**", "",
        f"Cross-validated on {cv['candidate']['held_out_passages']} held-out gold passages ({cv['split']}, "
        f"{cv['folds']} folds), the same folds for both coders"
        + (", the encoder tuned on each fold's training gold only" if cv.get("encoder_tuned_per_fold") else "") + "."
        + (" Not promoted, so the encoder was not tuned on all gold: this folder holds the heads only."
           if cv.get("encoder_tuned_per_fold") and not card.get("encoder") else ""), "",
        "| code | gold positives | F1 (this model) | F1 (active) |", "|---|---|---|---|",
    ]
    for code, n in card["gold_positives_per_code"].items():
        mine, theirs = cv["candidate"]["per_code"][code], cv["active"]["per_code"][code]
        lines.append(f"| {code} | {n} | {mine['f1']:.2f} | {theirs['f1']:.2f} |")
    lines += ["", f"Macro F1 {cv['candidate']['macro_f1']:.3f} vs {cv['active']['macro_f1']:.3f}; "
                  f"micro F1 {cv['candidate']['micro_f1']:.3f} vs {cv['active']['micro_f1']:.3f}.", ""]
    return "\n".join(lines)


def save_model(models_dir: Path, version: str, coder: TrainedCoder, card: dict) -> Path:
    import joblib

    folder = Path(models_dir) / version  # may hold the model's gold-tuned encoder already
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / ARTIFACT).exists():
        raise FileExistsError(folder / ARTIFACT)
    joblib.dump(coder, folder / ARTIFACT)
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2), encoding="utf-8")
    (folder / CARD_MD).write_text(card_markdown(card), encoding="utf-8")
    return folder


def load_model(folder: Path, *, embedding_model_id: str, codebook_version: str) -> tuple[TrainedCoder, dict]:
    """Load a model, refusing one trained for another base encoder or codebook version.

    ``embedding_model_id`` is the encoder qcode codes with before training (a
    gold-tuned model's encoder was tuned from it)."""
    import joblib

    folder = Path(folder)
    try:
        card = json.loads((folder / CARD_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelMismatchError(f"{folder} has no {CARD_JSON}; it is not a qcode model folder") from None
    trained_from = card.get("base_model_id", card["embedding_model_id"])
    if trained_from != embedding_model_id:
        raise ModelMismatchError(
            f"model {card['version']} was trained on embeddings from {trained_from}, but qcode is using "
            f"{embedding_model_id}; run 'qcode train' to train one for this embedding model")
    if card["codebook_version"] != codebook_version:
        raise ModelMismatchError(
            f"model {card['version']} was trained for codebook version {card['codebook_version']}, but the codebook "
            f"is now version {codebook_version}; run 'qcode train' to train one for this codebook")
    return joblib.load(folder / ARTIFACT), card


def labelled_training_set(codebook: Codebook, example_vectors: np.ndarray, vectors: np.ndarray,
                          codes: list[tuple[str, ...]], groups: list[str], texts: list[str] = ()) -> TrainingSet:
    """A TrainingSet from a labelled file instead of database gold (ids are row numbers)."""
    return training_set(codebook, example_vectors, vectors, codes, groups, [f"row{i}" for i in range(len(codes))],
                        texts)


def held_out_evaluation(data: TrainingSet, folds, *, fractions=(0.1, 0.25, 0.5, 1.0), min_positives: int = 3,
                        seed: int = 0) -> dict:
    """Zero-shot vs trained on held-out gold, and a learning curve over fractions of the training gold.

    For each fraction the same share of every fold's training gold is kept
    (a seeded random sample), so the curve shows what more reviewing buys.
    """
    from pipeline.evaluate import evaluate_scores

    labels = [data.code_ids[int(np.argmax(row))] if row.any() else NO_CODE for row in data.Y[~data.is_gold]]
    zero_shot = ZeroShotCoder().fit(data.X[~data.is_gold], labels, sample_weight=data.sample_weight[~data.is_gold])
    scores, applied, held = cross_validated_predictions(zero_shot, data, folds)
    result = {"held_out_passages": int(len(held)), "folds": len(folds),
              "zero_shot": evaluate_scores(data.Y[held], scores, applied, data.code_ids), "learning_curve": []}
    rng = np.random.default_rng(seed)
    for fraction in fractions:
        sampled = []
        gold_per_code = []
        for train, held_rows in folds:
            gold_train = train[data.is_gold[train]]
            keep = rng.choice(gold_train, size=max(1, int(round(fraction * len(gold_train)))), replace=False)
            sampled.append((np.sort(np.r_[train[~data.is_gold[train]], keep]), held_rows))
            gold_per_code.append(data.Y[keep].sum(axis=0).mean())
        scores, applied, held = cross_validated_predictions(TrainedCoder(min_positives=min_positives), data, sampled)
        figures = evaluate_scores(data.Y[held], scores, applied, data.code_ids)
        result["learning_curve"].append({"fraction": fraction, "gold_positives_per_code": float(np.mean(gold_per_code)),
                                         **figures})
    return result
