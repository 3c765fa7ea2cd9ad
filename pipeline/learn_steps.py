"""The learning workflow: training on reviewers' gold, held-out evaluation, emerging themes, retraining when gold is new.

Plain functions over ``pipeline/`` stages, I/O at the edges, as in ``pipeline/steps.py`` (the run workflow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.base import clone

from pipeline import themes as themes_module
from pipeline.classify import TrainedCoder, ZeroShotCoder, codebook_vectors, fit_zero_shot_coder
from pipeline.codebook import load_codebook
from pipeline.config import Settings
from pipeline.embed import embed_with_cache
from pipeline.errors import QcodeError
from pipeline.evaluate import read_labelled_csv
from pipeline.schemas import Codebook
from pipeline.store import Store
from pipeline.steps import (code_passages, coding_encoder, current_coder, load_coded_passages, new_run_id, open_codebook,
                            write_round_reports)
from pipeline.train import (TrainingSet, cv_metrics, gold_folds, gold_hash, held_out_evaluation,
                            labelled_training_set, model_card, model_version, not_worse, save_model, training_set)


def gold_training_set(store: Store, codebook: Codebook, embedder) -> TrainingSet:
    gold = store.gold_passages()
    if not gold:
        raise QcodeError("no reviewed passages yet; import reviewers' CSVs with 'qcode review import' first")
    example_vectors = codebook_vectors(codebook, embedder, store)
    gold_vectors, _ = embed_with_cache([g["text"] for g in gold], embedder, store)
    return training_set(codebook, example_vectors, gold_vectors, [tuple(g["codes"]) for g in gold],
                        [g["transcript_key"] for g in gold], [g["passage_id"] for g in gold])


def train_model(settings: Settings, *, force: bool = False, run_id: str | None = None, **params) -> dict:
    """Train on gold, compare with the active coder on the same folds, promote if not worse, then recode.

    ``params`` override TrainedCoder's defaults (e.g. ``C``, ``evidence_scale``).
    """
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        embedder = coding_encoder(settings, codebook)
        data = gold_training_set(store, codebook, embedder)
        folds = gold_folds(data)
        active, active_id = current_coder(store, codebook, embedder)
        candidate = TrainedCoder(**{"min_positives": settings.min_gold_per_code, **params})
        candidate_cv = cv_metrics(candidate, data, folds)
        active_cv = cv_metrics(active if isinstance(active, ZeroShotCoder) else clone(active), data, folds)
        promoted = force or not_worse(candidate_cv, active_cv)
        coder = candidate.fit(data.X, data.Y, code_ids=data.code_ids, is_gold=data.is_gold, groups=data.groups,
                              sample_weight=data.sample_weight)
        version = model_version(data)
        card = model_card(version=version, coder=coder, data=data, embedding_model_id=embedder.model_id,
                          codebook_version=codebook.version, candidate=candidate_cv, active=active_cv,
                          active_id=active_id, promoted=promoted, forced=force, min_positives=settings.min_gold_per_code)
        card["cross_validation"]["folds"] = len(folds)
        folder = save_model(settings.models_dir, version, coder, card)
        store.register_coder(f"trained:{version}", "trained", embedder.model_id, codebook.version, card["thresholds"],
                             artifact=str(folder.resolve()), activate=promoted)
        store.set_state("trained_gold", data.data_hash)
    result = {"version": version, "folder": str(folder), "promoted": promoted, "verdict": card["verdict"],
              "fallback_codes": card["zero_shot_fallback_codes"], "gold_passages": card["gold_passages"]}
    if promoted:
        run_id = run_id or new_run_id()
        result["recode"] = code_passages(settings, run_id)
        write_round_reports(settings, run_id)
    return result


def evaluate_model(settings: Settings, *, labelled: Path | None = None, train_file: Path | None = None,
                   split: str = "interview", folds: int = 5) -> dict:
    """Held-out figures for zero-shot vs trained coders, with a learning curve.

    Data: ``train_file`` to train on and ``labelled`` to test on; or
    ``labelled`` alone, split by ``split``; or the database's gold, split by
    interview or council.
    """
    if split not in ("interview", "council"):
        raise QcodeError(f"unknown split {split!r}; use 'interview' or 'council'")
    if train_file is not None and labelled is None:
        raise QcodeError("--train needs --labelled: the file to test on")
    codebook = load_codebook(settings.codebook_path)
    embedder = coding_encoder(settings, codebook)
    with Store(settings.db_path) as store:
        example_vectors = codebook_vectors(codebook, embedder, store)
        if labelled is None:
            gold = store.gold_passages()
            if not gold:
                raise QcodeError("no reviewed passages yet; import reviewers' CSVs or pass --labelled FILE")
            vectors, _ = embed_with_cache([g["text"] for g in gold], embedder, store)
            codes = [tuple(g["codes"]) for g in gold]
            groups = [g["transcript_key"] if split == "interview" else g["council"] for g in gold]
            test_rows = None
        else:
            rows = read_labelled_csv(labelled, codebook.ids)
            train_rows = read_labelled_csv(train_file, codebook.ids) if train_file else []
            everything = train_rows + rows
            vectors, _ = embed_with_cache([r.text for r in everything], embedder, store)
            codes = [r.codes for r in everything]
            groups = [(("train:" if i < len(train_rows) else "test:") + (r.interview if split == "interview" else r.council)
                       or f"row{i}") for i, r in enumerate(everything)]
            test_rows = np.arange(len(train_rows), len(everything)) if train_file else None
    data = labelled_training_set(codebook, example_vectors, vectors, codes, groups)
    if test_rows is None:
        fold_list = gold_folds(data, folds)
    else:
        gold_rows = np.flatnonzero(data.is_gold)
        held = gold_rows[test_rows]
        fold_list = [(np.setdiff1d(np.arange(len(data.X)), held), held)]
    result = held_out_evaluation(data, fold_list, min_positives=settings.min_gold_per_code)
    result.update(split=split, source=str(labelled) if labelled else "database gold",
                  trained_on=str(train_file) if train_file else "the other folds")
    return result


def emerging_themes(settings: Settings, *, clusters: int | None = None) -> dict:
    """Cluster substantive passages that no code fits (no applied code, no reviewer code)."""
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        embedder = coding_encoder(settings, codebook)
        zero_shot, _ = fit_zero_shot_coder(codebook, embedder, store)
        passages = [p for p in load_coded_passages(store)
                    if not p.codes and len(p.text.split()) >= themes_module.MIN_WORDS]
        vectors, _ = embed_with_cache([p.text for p in passages], embedder, store)
    if passages:
        # Passages nearer the uncoded examples than any code are small talk and procedure, not themes.
        scores, uncoded = zero_shot.score_codes(vectors)
        substantive = uncoded < scores.max(axis=1)
        passages = [p for p, keep in zip(passages, substantive) if keep]
        vectors = vectors[substantive]
    found = themes_module.cluster_themes([p.text for p in passages], vectors, [p.council for p in passages],
                                         clusters=clusters, code_centroids=zero_shot.centroids_,
                                         code_ids=list(zero_shot.classes_))
    return {"candidates": len(passages), "themes": found}


def gold_state(settings: Settings) -> str | None:
    """A hash of the gold and codebook version: training is only worth repeating when it changes."""
    with Store(settings.db_path) as store:
        gold = store.gold()
    if not gold:
        return None
    codebook = load_codebook(settings.codebook_path)
    return gold_hash(codebook.version, list(gold), [g["codes"] for g in gold.values()])


def train_if_new_gold(settings: Settings, run_id: str) -> dict:
    """Retrain when the gold changed since the last training; not enough gold is a note, not a failure."""
    current = gold_state(settings)
    with Store(settings.db_path) as store:
        last = store.get_state("trained_gold")
    if current is None or current == last:
        return {"trained": False, "reason": "no new gold since the last training" if current else "no gold yet"}
    try:
        result = train_model(settings, run_id=run_id)
    except QcodeError as exc:
        return {"trained": False, "reason": str(exc)}
    return {"trained": True, **{k: result[k] for k in ("version", "promoted", "verdict")}}
