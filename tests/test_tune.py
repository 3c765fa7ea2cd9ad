"""Tuning the encoder on the codebook: pairs, a real (small) fine-tune, the artifact and its card, reuse."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline import steps
from pipeline.config import Settings
from pipeline.schemas import Code, Codebook
from pipeline.tune import (TuningParams, build_tuned_encoder, code_description, codebook_pairs, encoder_folder,
                           training_data_hash, usable, weights_hash)

TWO_CODES = Codebook("tiny", "v-test", (
    Code("LA02", "leadership action", "Innovative partnerships", "Working with other organisations in new ways.",
         "cross-boundary working", include=("Joint ventures with health",),
         examples=("We set up a joint company with the county to run leisure.",
                   "Our shared service with two districts keeps the lights on.")),
    Code("BR03", "barrier", "Lack of capacity and resources", "Not enough time, money or people to innovate.",
         "strategic approach", include=("Budget cuts absorbing attention",),
         examples=("There's nobody left to do the thinking, we're all firefighting.",
                   "Every spare pound went on keeping adult social care afloat.")),
))
QUICK = TuningParams(epochs=3, batch_size=4, learning_rate=5e-5)


def test_pairs_cover_every_include_note_restatement_and_example(codebook):
    pairs = codebook_pairs(codebook)
    assert len(pairs) == sum(len(c.include) + len(c.restatements) + len(c.examples) for c in codebook.codes)
    assert all(c.restatements for c in codebook.codes)
    first = codebook.codes[0]
    assert (first.restatements[0], first.id) in pairs
    assert pairs[0] == (codebook.codes[0].include[0], codebook.codes[0].id)
    assert {code for _, code in pairs} == set(codebook.ids)


def test_training_data_hash_changes_with_the_codebook_text():
    edited = replace(TWO_CODES, codes=(TWO_CODES.codes[0], replace(TWO_CODES.codes[1], examples=("Another one.",))))
    assert training_data_hash(TWO_CODES) == training_data_hash(TWO_CODES)
    assert training_data_hash(edited) != training_data_hash(TWO_CODES)


@pytest.fixture(scope="module")
def tiny_tuned(embedder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoders")
    calls = []
    built = build_tuned_encoder(embedder.model, embedder.model_id, TWO_CODES, folder, QUICK,
                                lambda done, total: calls.append((done, total)))
    return folder, built, calls


@pytest.mark.slow
def test_a_tuned_encoder_pulls_examples_towards_their_codes_definition(embedder, tiny_tuned):
    from sentence_transformers import SentenceTransformer

    _, built, calls = tiny_tuned
    assert calls[-1] == (3 * 2, 3 * 2)  # 3 epochs of 6 pairs in batches of 4
    tuned = SentenceTransformer(str(built), device="cpu")

    def margin(model):
        anchors = model.encode([a for a, _ in codebook_pairs(TWO_CODES)], normalize_embeddings=True)
        targets = model.encode([code_description(c) for c in TWO_CODES.codes], normalize_embeddings=True)
        own = np.array([[c.id for c in TWO_CODES.codes].index(code) for _, code in codebook_pairs(TWO_CODES)])
        similarity = anchors @ targets.T
        return float(np.mean(similarity[np.arange(len(own)), own] - similarity[np.arange(len(own)), 1 - own]))

    assert margin(tuned) > margin(embedder.model) + 0.05
    assert embedder.encode(["unchanged base"]).shape == (1, 384)  # the base model was copied, not changed


@pytest.mark.slow
def test_the_artifact_has_a_card_and_is_reused_or_rebuilt_when_tampered_with(embedder, tiny_tuned):
    folder, built, _ = tiny_tuned
    assert built == encoder_folder(folder, embedder.model_id, TWO_CODES, QUICK)
    card = json.loads((built / "card.json").read_text(encoding="utf-8"))
    assert card["base_model_id"] == embedder.model_id and card["codebook_version"] == "v-test"
    assert card["training_data_hash"] == training_data_hash(TWO_CODES) and card["training_pairs"] == 6
    assert card["params"]["seed"] == 0 and card["weights_sha256"] == weights_hash(built)
    assert "Tuned encoder for codebook tiny v-test" in (built / "card.md").read_text(encoding="utf-8")
    assert usable(built)

    again = []
    assert build_tuned_encoder(embedder.model, embedder.model_id, TWO_CODES, folder, QUICK,
                               lambda *step: again.append(step)) == built
    assert again == []  # reused: no training step ran

    with open(built / "model.safetensors", "r+b") as weights:
        weights.seek(-8, 2)
        weights.write(b"tampered")
    assert not usable(built)
    rebuilt = []
    build_tuned_encoder(embedder.model, embedder.model_id, TWO_CODES, folder, QUICK, lambda *s: rebuilt.append(s))
    assert rebuilt and usable(built)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no staging folder left behind


@pytest.mark.slow
def test_coding_uses_the_tuned_encoder_unless_switched_off(tmp_path, embedder):
    tuned = steps.coding_encoder(Settings.load(db_path=tmp_path / "q.duckdb"))
    base = steps.coding_encoder(Settings.load(db_path=tmp_path / "q.duckdb", tune_encoder=False))
    assert base.model_id == embedder.model_id
    assert tuned.model_id.startswith("all-MiniLM-L6-v2-53aa5117-tuned-") and tuned.model_id != base.model_id
    assert usable(Path(tuned.model_name))


def test_the_tune_setting_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("QCODE_TUNE_ENCODER", "false")
    assert Settings.load().tune_encoder is False
    monkeypatch.setenv("QCODE_TUNE_ENCODER", "perhaps")
    with pytest.raises(Exception, match="QCODE_TUNE_ENCODER must be true or false"):
        Settings.load()
    monkeypatch.delenv("QCODE_TUNE_ENCODER")
    assert Settings.load().tune_encoder_on_gold is True
    monkeypatch.setenv("QCODE_TUNE_ENCODER_ON_GOLD", "no")
    assert Settings.load().tune_encoder_on_gold is False


def test_gold_pairs_repeat_gold_to_match_the_replayed_codebook_and_mask_a_passage_s_other_codes():
    from pipeline.tune import GoldTuningParams, gold_pairs

    texts = ["We built a joint venture with the county's health trust.", "Nothing left in the budget for that."]
    pairs = gold_pairs(TWO_CODES, texts, [("LA02", "BR03"), ("BR03",)], GoldTuningParams(replay=6))
    reviewed = [p for p in pairs if p[0] in texts]
    assert len(pairs) == 6 + 6 and len(reviewed) == 6  # 3 gold pairs twice, 6 codebook pairs (all there are)
    assert (texts[0], "LA02", frozenset({"BR03"})) in reviewed and (texts[0], "BR03", frozenset({"LA02"})) in reviewed
    assert (texts[1], "BR03", frozenset()) in reviewed
    assert {p[:2] for p in pairs if p[0] not in texts} == set(codebook_pairs(TWO_CODES))
    assert gold_pairs(TWO_CODES, ["Hello."], [()], GoldTuningParams()) == []
