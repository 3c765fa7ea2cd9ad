"""The learning workflow: training on reviewers' gold, held-out evaluation, emerging themes, retraining when gold is new.

Plain functions over ``pipeline/`` stages, I/O at the edges, as in ``pipeline/steps.py`` (the run workflow).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from sklearn.base import clone

from pipeline import themes as themes_module
from pipeline.classify import TrainedCoder, ZeroShotCoder, codebook_vectors, fit_zero_shot_coder
from pipeline.codebook import load_codebook
from pipeline.config import Settings
from pipeline.embed import EmbeddingCache, embed_with_cache, encode_with, load_embedder
from pipeline.errors import QcodeError
from pipeline.evaluate import read_labelled_csv
from pipeline.schemas import Codebook
from pipeline.store import Store
from pipeline.steps import (active_coder, batch_progress, code_passages, codebook_cache, coding_encoder,
                            load_coded_passages, new_run_id, open_codebook, write_round_reports)
from pipeline.train import (CARD_JSON, TrainingSet, cv_metrics, gold_folds, gold_hash, held_out_evaluation,
                            labelled_training_set, model_card, model_version, not_worse, save_model, training_set)
from pipeline.tune import GoldTuningParams, save_encoder, tune_on_gold


def gold_training_set(store: Store, codebook: Codebook, embedder, examples_cache: EmbeddingCache) -> TrainingSet:
    gold = store.gold_passages()
    if not gold:
        raise QcodeError("no reviewed passages yet; import reviewers' CSVs with 'qcode review import' first")
    example_vectors = codebook_vectors(codebook, embedder, examples_cache)
    gold_vectors, _ = embed_with_cache([g["text"] for g in gold], embedder, store)
    return training_set(codebook, example_vectors, gold_vectors, [tuple(g["codes"]) for g in gold],
                        [g["transcript_key"] for g in gold], [g["passage_id"] for g in gold],
                        [g["text"] for g in gold])


def fold_encoder(embedder, codebook: Codebook, data: TrainingSet, params: GoldTuningParams):
    """``reencode(train_rows)`` for cross-validation: every row's vector from a copy of ``embedder`` tuned on the
    gold among ``train_rows`` only; each fold is tuned once, however many coders are compared on it."""
    tuned: dict[bytes, np.ndarray] = {}

    def reencode(train_rows: np.ndarray) -> np.ndarray:
        key = np.asarray(train_rows).tobytes()
        if key not in tuned:
            gold = [r for r in train_rows if data.is_gold[r]]
            model = _tuned_on(embedder, codebook, data, gold, params, f"tune on gold, fold {len(tuned) + 1}")
            tuned[key] = encode_with(model, data.texts, embedder.batch_size)
        return tuned[key]
    return reencode


def _tuned_on(embedder, codebook: Codebook, data: TrainingSet, rows, params: GoldTuningParams, label: str):
    gold_codes = [tuple(c for c, on in zip(data.code_ids, data.Y[r]) if on) for r in rows]
    with batch_progress(label) as advance:
        return tune_on_gold(embedder.model, codebook, [data.texts[r] for r in rows], gold_codes, params, advance)


def train_model(settings: Settings, *, force: bool = False, run_id: str | None = None,
                encoder_tuning: GoldTuningParams | None = None, **params) -> dict:
    """Train on gold, compare with the active coder on the same folds, promote if not worse, then recode.

    With ``Settings.tune_encoder_on_gold`` (the default) the encoder is tuned
    on gold as well as the heads: in cross-validation on each fold's training
    gold only, and, once promoted, on all of it; the model's encoder is kept
    in its folder and codes from then on. ``encoder_tuning`` overrides how.
    ``params`` override TrainedCoder's defaults (e.g. ``C``, ``evidence_scale``).
    """
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        embedder = coding_encoder(settings, codebook)
        data = gold_training_set(store, codebook, embedder, codebook_cache(settings, store))
        folds = gold_folds(data)
        active, active_id, _ = active_coder(settings, store, codebook)
        active_card = store_model_card(store)
    tuning = encoder_tuning or (GoldTuningParams() if settings.tune_encoder_on_gold else None)
    reencode = fold_encoder(embedder, codebook, data, tuning) if tuning and tuning.epochs else None
    candidate = TrainedCoder(**{"min_positives": settings.min_gold_per_code, **params})
    candidate_cv = cv_metrics(candidate, data, folds, reencode)
    if isinstance(active, ZeroShotCoder):
        active_cv = cv_metrics(active, data, folds)
    else:  # the active model's recipe refitted on the same folds, its encoder tuned per fold if it was tuned
        active_tuning = GoldTuningParams(**active_card["encoder"]["params"]) if active_card.get("encoder") else None
        active_reencode = (reencode if reencode and active_tuning == tuning else
                           fold_encoder(embedder, codebook, data, active_tuning) if active_tuning else None)
        active_cv = cv_metrics(clone(active), data, folds, active_reencode)
    promoted = force or not_worse(candidate_cv, active_cv)
    version = model_version(data)
    folder = settings.models_dir / version
    coding, X, encoder = embedder, data.X, None
    if reencode and promoted:
        gold_rows = np.flatnonzero(data.is_gold)
        model = _tuned_on(embedder, codebook, data, gold_rows, tuning, "tune on all gold")
        name = f"gold-encoder-{version}"
        save_encoder(model, folder / name, {
            "kind": "gold-tuned encoder", "base_model_id": embedder.model_id, "codebook": codebook.name,
            "codebook_version": codebook.version, "training_data_hash": data.data_hash,
            "gold_passages": len(gold_rows), "params": asdict(tuning),
            "cross_validation": {k: candidate_cv[k] for k in ("macro_f1", "micro_f1", "top1_accuracy")}},
            _encoder_card_markdown)
        coding = load_embedder(str((folder / name).resolve()), settings.embed_batch_size)
        X = coding.encode(data.texts)  # the saved encoder, exactly as it will code
        encoder = {"folder": name, "params": asdict(tuning)}
    coder = candidate.fit(X, data.Y, code_ids=data.code_ids, is_gold=data.is_gold, groups=data.groups,
                          sample_weight=data.sample_weight)
    card = model_card(version=version, coder=coder, data=data, embedding_model_id=coding.model_id,
                      base_model_id=embedder.model_id, encoder=encoder,
                      codebook_version=codebook.version, candidate=candidate_cv, active=active_cv,
                      active_id=active_id, promoted=promoted, forced=force, min_positives=settings.min_gold_per_code)
    card["cross_validation"]["folds"] = len(folds)
    card["cross_validation"]["encoder_tuned_per_fold"] = bool(reencode)
    save_model(settings.models_dir, version, coder, card)
    with Store(settings.db_path) as store:
        store.register_coder(f"trained:{version}", "trained", coding.model_id, codebook.version, card["thresholds"],
                             artifact=str(folder.resolve()), activate=promoted)
        store.set_state("trained_gold", data.data_hash)
    result = {"version": version, "folder": str(folder), "promoted": promoted, "verdict": card["verdict"],
              "fallback_codes": card["zero_shot_fallback_codes"], "gold_passages": card["gold_passages"],
              "encoder_tuned": encoder is not None}
    if promoted:
        run_id = run_id or new_run_id()
        result["recode"] = code_passages(settings, run_id)
        write_round_reports(settings, run_id)
    return result


def store_model_card(store: Store) -> dict:
    """The active trained model's card, or {} when the zero-shot coder is active."""
    record = store.active_coder_record()
    if not record or record["kind"] != "trained":
        return {}
    return json.loads((Path(record["artifact"]) / CARD_JSON).read_text(encoding="utf-8"))


def _encoder_card_markdown(card: dict) -> str:
    params = ", ".join(f"{k} {v}" for k, v in card["params"].items())
    cv = card["cross_validation"]
    return (f"# Gold-tuned encoder for codebook {card['codebook']} {card['codebook_version']}\n\n"
            f"- base model: {card['base_model_id']} (the encoder tuned on the codebook)\n"
            f"- training data: {card['gold_passages']} reviewed passages, each paired with its codes' label and "
            f"definition, and replayed codebook pairs (gold hash {card['training_data_hash']})\n"
            f"- settings: {params}\n"
            f"- cross-validated with the encoder tuned per fold (by interview): macro F1 {cv['macro_f1']:.3f}, "
            f"micro F1 {cv['micro_f1']:.3f}, top-1 {cv['top1_accuracy']:.3f}\n"
            f"- built {card['built_at']}; weights sha256 {card['weights_sha256']}\n")


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
        example_vectors = codebook_vectors(codebook, embedder, codebook_cache(settings, store))
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
        zero_shot, _ = fit_zero_shot_coder(codebook, embedder, codebook_cache(settings, store))
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
