"""Learning from reviewers: the trained coder, training sets, model cards, promotion and recoding."""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import replace

import duckdb
import numpy as np
import pytest
import yaml
from sklearn.base import clone

from conftest import query
from pipeline import learn_steps, steps
from pipeline.classify import TrainedCoder, ZeroShotCoder, codebook_training_set
from pipeline.train import ModelMismatchError, gold_folds, load_model, training_set


@pytest.fixture(scope="module")
def example_vectors(embedder, codebook):
    texts, _ = codebook_training_set(codebook)
    return embedder.encode(texts)


def test_training_set_never_counts_codebook_examples_as_evidence(codebook, example_vectors):
    gold_vectors = example_vectors[:3] * 0.5
    data = training_set(codebook, example_vectors, gold_vectors, [("LA02",), (), ("LA02", "BR03")],
                        ["a/1", "a/1", "b/2"], ["p1", "p2", "p3"])

    assert data.gold_counts["LA02"] == 2 and data.gold_counts["BR03"] == 1 and data.gold_counts["LA01"] == 0
    assert data.is_gold.sum() == 3
    assert not data.Y[np.flatnonzero(data.is_gold)[1]].any()  # reviewed with no code: negative for every code
    again = training_set(codebook, example_vectors, gold_vectors, [("LA02",), (), ("BR03", "LA02")],
                         ["a/1", "a/1", "b/2"], ["p1", "p2", "p3"])
    assert again.data_hash == data.data_hash  # order of codes in a decision does not matter
    changed = training_set(codebook, example_vectors, gold_vectors, [("LA02",), ("LA05",), ("LA02", "BR03")],
                           ["a/1", "a/1", "b/2"], ["p1", "p2", "p3"])
    assert changed.data_hash != data.data_hash


def test_gold_folds_never_split_an_interview(codebook, example_vectors):
    groups = [f"i{n % 5}" for n in range(20)]
    data = training_set(codebook, example_vectors, example_vectors[:20], [("LA01",)] * 20, groups,
                        [f"p{n}" for n in range(20)])
    folds = gold_folds(data, 5)
    assert len(folds) == 5
    for train, held in folds:
        assert set(data.groups[train]).isdisjoint(set(data.groups[held]))
        assert (~data.is_gold).sum() == (~data.is_gold[train]).sum()  # codebook examples always train
    one_interview = training_set(codebook, example_vectors, example_vectors[:3], [("LA01",)] * 3, ["x"] * 3,
                                 ["a", "b", "c"])
    with pytest.raises(Exception, match="gold from at least 2 interviews; there is gold from 1"):
        gold_folds(one_interview)


def test_codes_without_evidence_behave_exactly_like_zero_shot(codebook, example_vectors, embedder):
    data = training_set(codebook, example_vectors, example_vectors[10:20], [("LA01",)] * 10,
                        [f"i{n % 4}" for n in range(10)], [f"p{n}" for n in range(10)])
    coder = TrainedCoder(min_positives=3).fit(data.X, data.Y, code_ids=data.code_ids, is_gold=data.is_gold,
                                              groups=data.groups)
    texts, labels = codebook_training_set(codebook)
    zero_shot = ZeroShotCoder().fit(example_vectors, labels)
    passages = embedder.encode(["We pooled budgets with the NHS trust.", "Shall I pour the coffee?",
                                "Whitehall keeps changing the funding rules every year."])

    mine, theirs = coder.predict(passages), zero_shot.predict(passages)

    fallback = coder.weights_ == 0
    assert list(coder.classes_).index("LA01") in np.flatnonzero(~fallback)
    assert fallback.sum() == 23
    np.testing.assert_array_equal(mine[:, fallback], theirs[:, fallback])
    ranks_mine = np.argsort(-coder.decision_function(passages)[:, fallback], axis=1)
    ranks_theirs = np.argsort(-zero_shot.decision_function(passages)[:, fallback], axis=1)
    np.testing.assert_array_equal(ranks_mine, ranks_theirs)


def test_trained_coder_follows_the_estimator_contract(codebook, example_vectors):
    coder = TrainedCoder(C=2.0, evidence_scale=3.0)
    assert clone(coder).get_params() == coder.get_params()
    data = training_set(codebook, example_vectors, example_vectors[:4], [("LA01",)] * 4, ["a", "b", "a", "b"],
                        ["p1", "p2", "p3", "p4"])
    with pytest.raises(ValueError, match="min_positives must be a positive integer"):
        TrainedCoder(min_positives=0).fit(data.X, data.Y, code_ids=data.code_ids, is_gold=data.is_gold)
    with pytest.raises(ValueError, match="sorted code id order"):
        TrainedCoder().fit(data.X, data.Y, code_ids=list(reversed(data.code_ids)), is_gold=data.is_gold)
    with pytest.raises(ValueError, match="C and temperature must be positive"):
        TrainedCoder(C=0).fit(data.X, data.Y, code_ids=data.code_ids, is_gold=data.is_gold)
    fitted = TrainedCoder().fit(data.X, data.Y, code_ids=data.code_ids, is_gold=data.is_gold, groups=data.groups)
    assert fitted is not None and fitted.evidence_[list(fitted.classes_).index("LA01")] == 4


def test_training_promotes_a_better_model_and_recodes_without_touching_gold(gold_world):
    settings = gold_world
    gold_before = query(settings, "SELECT passage_id, codes FROM gold ORDER BY passage_id")

    result = learn_steps.train_model(settings)

    card = json.loads((settings.models_dir / result["version"] / "card.json").read_text())
    for field in ("embedding_model_id", "codebook_version", "training_data_hash", "gold_positives_per_code",
                  "cross_validation", "created_at", "verdict"):
        assert card[field]
    # the bundled MiniLM, tuned on this codebook version
    assert card["embedding_model_id"].startswith(f"all-MiniLM-L6-v2-53aa5117-tuned-{card['codebook_version']}-")
    assert min(card["gold_positives_per_code"].values()) >= 11
    cv = card["cross_validation"]
    assert set(cv["candidate"]["per_code"]) == set(card["gold_positives_per_code"])
    assert cv["candidate"]["held_out_passages"] == card["gold_passages"]
    assert result["promoted"] is True, card["verdict"]
    assert cv["candidate"]["macro_f1"] >= cv["active"]["macro_f1"]
    assert cv["candidate"]["top1_accuracy"] >= cv["active"]["top1_accuracy"]
    assert card["verdict"].startswith("promoted: cross-validated macro F1")
    assert "# qcode model" in (settings.models_dir / result["version"] / "card.md").read_text()
    coder_id = f"trained:{result['version']}"
    assert query(settings, "SELECT coder_id FROM coders WHERE activated_at IS NOT NULL "
                           "ORDER BY activated_at DESC LIMIT 1") == [(coder_id,)]
    passages = query(settings, "SELECT count(*) FROM passages WHERE retired_at IS NULL")[0][0]
    assert result["recode"]["coded"] == passages
    assert query(settings, "SELECT count(DISTINCT passage_id) FROM coding_sets WHERE coder_id = ?", [coder_id]) == [(passages,)]
    assert query(settings, "SELECT passage_id, codes FROM gold ORDER BY passage_id") == gold_before


def test_a_worse_retrain_is_not_promoted_unless_forced(gold_world):
    settings = gold_world
    # Crushing regularisation, full trust in the trained part and no tuned thresholds: a deliberately bad model.
    bad = {"C": 1e-4, "evidence_scale": 0.0, "threshold_folds": 0}
    worse = learn_steps.train_model(settings, **bad)

    assert worse["promoted"] is False
    assert worse["verdict"].startswith("not promoted")
    card = json.loads((settings.models_dir / worse["version"] / "card.json").read_text())
    assert card["cross_validation"]["candidate"]["macro_f1"] < card["cross_validation"]["active"]["macro_f1"]
    assert query(settings, "SELECT kind FROM coders WHERE activated_at IS NOT NULL") == [("zero-shot",)]

    forced = learn_steps.train_model(settings, **bad, force=True)
    assert forced["promoted"] is True and "promoted by --force" in forced["verdict"]


def test_training_tunes_the_encoder_on_gold_and_codes_with_it(gold_world, caplog):
    from pipeline.tune import GoldTuningParams, code_description, usable

    # Reviewers have coded two interviews so far: two folds, so the encoder is tuned three times.
    kept = [key for (key,) in query(gold_world, "SELECT DISTINCT transcript_key FROM passages ORDER BY 1 LIMIT 2")]
    with duckdb.connect(str(gold_world.db_path)) as con:
        con.execute("DELETE FROM review_decisions WHERE passage_id IN (SELECT passage_id FROM passages "
                    "WHERE transcript_key NOT IN (?, ?))", kept)
    settings = replace(gold_world, tune_encoder_on_gold=True)
    base = steps.coding_encoder(settings)

    result = learn_steps.train_model(settings, force=True, encoder_tuning=GoldTuningParams(epochs=1, replay=64))

    assert result["promoted"] and result["encoder_tuned"]
    folder = settings.models_dir / result["version"]
    card = json.loads((folder / "card.json").read_text())
    assert card["base_model_id"] == base.model_id and card["cross_validation"]["encoder_tuned_per_fold"]
    assert card["cross_validation"]["folds"] == 2
    encoder_folder = folder / card["encoder"]["folder"]
    encoder_card = json.loads((encoder_folder / "card.json").read_text())
    assert usable(encoder_folder) and encoder_card["base_model_id"] == base.model_id
    assert encoder_card["training_data_hash"] == card["training_data_hash"]
    assert encoder_card["gold_passages"] == card["gold_passages"] == result["gold_passages"]

    codebook = steps.load_codebook(settings.codebook_path)
    with steps.Store(settings.db_path) as store:
        _, coder_id, tuned = steps.active_coder(settings, store, codebook)
        gold = store.gold_passages()
    assert coder_id == f"trained:{result['version']}"
    assert tuned.torch_model_id == card["embedding_model_id"] != base.model_id
    # its ONNX copies (auto codes with the fp32 one) sit in the model version's folder, not among shared encoders
    assert tuned.backend == "onnx" and Path(tuned.onnx_folder).is_relative_to(folder.resolve())
    # every passage was embedded again by the gold-tuned encoder and coded by the trained coder
    passages = query(settings, "SELECT count(*) FROM passages WHERE retired_at IS NULL")[0][0]
    assert result["recode"]["coded"] == passages
    assert query(settings, "SELECT count(DISTINCT text_hash) FROM embeddings WHERE model_id = ?",
                 [tuned.model_id])[0][0] >= query(settings, "SELECT count(DISTINCT text_hash) FROM passages "
                                                            "WHERE retired_at IS NULL")[0][0]
    # what it learnt: the reviewed passages sit closer to their own codes' descriptions than before
    descriptions = {c.id: code_description(c) for c in codebook.codes}

    def own_code_similarity(embedder):
        pairs = [(g["text"], descriptions[c]) for g in gold for c in g["codes"]]
        a = embedder.encode([t for t, _ in pairs])
        b = embedder.encode([d for _, d in pairs])
        return float((a * b).sum(axis=1).mean())
    assert own_code_similarity(tuned) > own_code_similarity(base) + 0.02

    # Retraining on the same gold: the active model's recipe (its encoder tuned per fold too) scores exactly as the
    # candidate's, on the very same fold encoders, so the gate lets it through.
    again = learn_steps.train_model(settings, encoder_tuning=GoldTuningParams(epochs=1, replay=64))
    cv = json.loads((settings.models_dir / again["version"] / "card.json").read_text())["cross_validation"]
    assert cv["active_coder"] == coder_id
    assert cv["candidate"]["macro_f1"] == cv["active"]["macro_f1"]
    assert cv["candidate"]["top1_accuracy"] == cv["active"]["top1_accuracy"]
    assert again["promoted"] and again["encoder_tuned"]
    encoder_folder = settings.models_dir / again["version"] / f"gold-encoder-{again['version']}"

    # weights that no longer match the card: refused, and coding falls back to zero-shot with a warning
    with open(encoder_folder / "model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x00\x00\x00")
    steps.load_embedder.cache_clear()
    recoded = steps.code_passages(settings, steps.new_run_id())
    assert recoded["coder_id"].startswith("zero-shot:")
    assert "the active model cannot be used" in caplog.text


def test_a_model_for_another_codebook_is_refused_and_coding_falls_back_to_zero_shot(gold_world, tmp_path, caplog):
    settings = gold_world
    result = learn_steps.train_model(settings)
    assert result["promoted"]
    folder = settings.models_dir / result["version"]
    card = json.loads((folder / "card.json").read_text())
    with pytest.raises(ModelMismatchError, match=rf"model {result['version']} was trained for codebook version "
                                                 rf"{card['codebook_version']}, but the codebook is now version v2"):
        load_model(folder, embedding_model_id=card["embedding_model_id"], codebook_version="v2")
    with pytest.raises(ModelMismatchError, match="was trained on embeddings from"):
        load_model(folder, embedding_model_id="other-model", codebook_version=card["codebook_version"])

    raw = yaml.safe_load(settings.codebook_path.read_text(encoding="utf-8"))
    raw["codes"][0]["definition"] += " Also when leaders share a long-term plan."
    for code in raw["codes"]:  # a lean new version, so tuning its encoder takes seconds, not minutes
        code.pop("restatements", None)
        code["examples"] = code["examples"][:4]
    changed = tmp_path / "codebook-v2.yaml"
    changed.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    recoded = steps.code_passages(replace(settings, codebook_path=changed), steps.new_run_id())

    assert recoded["coder_id"].startswith("zero-shot:")
    assert "the active model cannot be used" in caplog.text and "run 'qcode train'" in caplog.text


def test_held_out_evaluation_reports_zero_shot_and_a_learning_curve(settings, codebook):
    from pipeline.classify import prototype_weights
    from pipeline.config import PROJECT_ROOT
    from pipeline.agreement import indicator_matrix
    from pipeline.evaluate import evaluate_scores, read_labelled_csv

    dev = PROJECT_ROOT / "bench" / "dev_set.csv"
    result = learn_steps.evaluate_model(settings, labelled=dev, split="council", folds=4)

    rows = read_labelled_csv(dev, codebook.ids)
    texts, labels = codebook_training_set(codebook)
    encoder = steps.coding_encoder(settings, codebook)  # the encoder qcode codes with, computed independently here
    zero_shot = ZeroShotCoder().fit(encoder.encode(texts), labels, sample_weight=prototype_weights(codebook))
    scores, uncoded = zero_shot.score_codes(encoder.encode([r.text for r in rows]))
    expected = evaluate_scores(indicator_matrix([r.codes for r in rows], list(zero_shot.classes_)), scores,
                               zero_shot.apply_thresholds(scores, uncoded), list(zero_shot.classes_))
    assert result["held_out_passages"] == len(rows) and result["folds"] == 4
    assert result["zero_shot"]["macro_f1"] == pytest.approx(expected["macro_f1"])
    assert result["zero_shot"]["top1_accuracy"] == pytest.approx(expected["top1_accuracy"])
    curve = result["learning_curve"]
    assert [p["fraction"] for p in curve] == [0.1, 0.25, 0.5, 1.0]
    per_code = [p["gold_positives_per_code"] for p in curve]
    assert per_code == sorted(per_code) and per_code[0] < 1.5 < per_code[-1]
    assert all(0.0 <= p["macro_f1"] <= 1.0 for p in curve)


def test_themes_are_deterministic_and_only_hold_passages_no_code_fits(coded_world):
    _, settings = coded_world
    first = learn_steps.emerging_themes(settings, clusters=4)
    second = learn_steps.emerging_themes(settings, clusters=4)

    assert first == second
    assert len(first["themes"]) == 4 and sum(t["size"] for t in first["themes"]) == first["candidates"]
    with duckdb.connect(str(settings.db_path), read_only=True) as con:
        coded_texts = {r[0] for r in con.execute(
            "SELECT p.text FROM passages p JOIN codings c USING (passage_id) WHERE c.applied").fetchall()}
    typical = [text for theme in first["themes"] for text in theme["typical_passages"]]
    assert typical and not set(typical) & coded_texts
    assert all(len(text.split()) >= 12 for text in typical)


def test_the_gate_refuses_a_coder_better_in_macro_f1_but_worse_at_the_main_code():
    from pipeline.train import not_worse

    active = {"macro_f1": 0.611, "top1_accuracy": 0.556}  # zero-shot on real report prose
    assert not not_worse({"macro_f1": 0.615, "top1_accuracy": 0.426}, active)  # trained on 1.9 gold per code
    assert not not_worse({"macro_f1": 0.600, "top1_accuracy": 0.600}, active)
    assert not_worse({"macro_f1": 0.611, "top1_accuracy": 0.556}, active)


def test_gold_moves_its_codes_centroid_towards_the_language_reviewers_see(codebook, example_vectors, embedder):
    gold_texts = ["The authority and the clinical commissioning group now run one joint discharge team.",
                  "A shared management structure with the neighbouring district has been in place since April.",
                  "Councillors agreed to extend the pooled budget with the health trust for a further three years.",
                  "Thanks, that's everything on my list for today."]
    gold_codes = [("LA02",), ("LA02",), ("LA02",), ()]
    data = training_set(codebook, example_vectors, embedder.encode(gold_texts), gold_codes,
                        ["i1", "i2", "i3", "i4"], ["p1", "p2", "p3", "p4"])
    unseen = embedder.encode(["Since last year the two councils have shared a single legal services team."])
    la02 = list(data.code_ids).index("LA02")

    def fitted(gold_weight):
        return TrainedCoder(gold_weight=gold_weight).fit(data.X, data.Y, code_ids=data.code_ids,
                                                         is_gold=data.is_gold, groups=data.groups,
                                                         sample_weight=data.sample_weight)

    without, with_gold = fitted(0.0), fitted(0.1)
    assert with_gold.zero_shot_.score_codes(unseen)[0][0, la02] > without.zero_shot_.score_codes(unseen)[0][0, la02]
    assert len(with_gold.zero_shot_.uncoded_prototypes_) == len(without.zero_shot_.uncoded_prototypes_) + 1
    unreviewed = np.arange(len(data.code_ids)) != la02
    np.testing.assert_array_equal(with_gold.zero_shot_.thresholds_[unreviewed],
                                  without.zero_shot_.thresholds_[unreviewed])
    with pytest.raises(ValueError, match="gold_weight must be between 0 and 10"):
        TrainedCoder(gold_weight=-1).fit(data.X, data.Y, code_ids=data.code_ids, is_gold=data.is_gold)
