"""pipeline/onnx_backend.py: the ONNX Runtime copies (fp32, int8) of the real bundled encoder, their card, and
how the backend is chosen."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline import steps
from pipeline.config import Settings
from pipeline.embed import load_embedder
from pipeline.errors import ConfigError
from pipeline.onnx_backend import (BARS, CARD, FULL_BATCH_TOKENS, ONNX_BACKENDS, ONNX_FILES, AgreementBar,
                                   build_onnx_copies, calibration_texts, length_batches, onnx_folder, onnx_model_id,
                                   read_card, token_lengths)

pytestmark = pytest.mark.slow

TEXTS = ["We pooled budgets with the health trust to fund the new service.",
         "The chief executive told us failure was allowed if we learned from it.",
         "Councillors kept sending the business case back.", "Hello.",
         "Our digital team was cut in half and the pilots stopped."]


@pytest.fixture(scope="module")
def onnx_copies(tmp_path_factory, embedder, codebook):
    folder = onnx_folder(tmp_path_factory.mktemp("encoders"), embedder.model_id)
    card = build_onnx_copies(embedder.model, embedder.model_id, folder, codebook)
    return folder, card


def test_the_copies_have_a_card_that_names_their_files_and_agreement(onnx_copies, embedder, codebook):
    folder, card = onnx_copies
    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD, *ONNX_FILES.values()])
    assert card == json.loads((folder / CARD).read_text())
    assert card["base_model_id"] == embedder.model_id
    assert set(card["copies"]) == set(ONNX_BACKENDS)
    texts, _ = calibration_texts(codebook)
    assert len(texts) == len(codebook.codes) + sum(
        len(c.include) + len(c.restatements) + len(c.examples) for c in codebook.codes)
    for backend, copy in card["copies"].items():
        calibration = copy["calibration"]
        assert calibration["codebook_version"] == codebook.version and calibration["texts"] == len(texts)
        assert 0.9 < calibration["min_cosine"] <= calibration["mean_cosine"] <= 1.0
        assert copy["bar"] == {"mean_cosine": BARS[backend].mean_cosine,
                               "nearest_code_agreement": BARS[backend].nearest_code_agreement}
        assert copy["agrees_with_torch"] == (calibration["mean_cosine"] >= copy["bar"]["mean_cosine"] and
                                             calibration["nearest_code_agreement"] >= copy["bar"]["nearest_code_agreement"])
    # fp32 in ONNX Runtime computes torch's vectors up to rounding, so it clears its strict bar
    assert card["copies"]["onnx"]["calibration"]["min_cosine"] > 0.9999
    assert card["copies"]["onnx"]["agrees_with_torch"]
    # int8 layer weights (the 47 MB word-embedding table stays fp32): smaller than the fp32 weights
    fp32_bytes = (Path(embedder._location) / "model.safetensors").stat().st_size
    assert (folder / ONNX_FILES["onnx-int8"]).stat().st_size < 0.7 * fp32_bytes
    assert (folder / ONNX_FILES["onnx"]).stat().st_size > 0.95 * fp32_bytes
    assert read_card(folder) == card


@pytest.mark.parametrize("backend,min_cosine", [("onnx", 0.9999), ("onnx-int8", 0.97)])
def test_copies_give_torch_vectors_and_store_them_under_their_own_id(onnx_copies, embedder, backend, min_cosine):
    folder, card = onnx_copies
    fast = load_embedder(embedder.model_name, embedder.batch_size, backend, str(folder))
    assert fast.backend == backend and embedder.backend == "torch"
    assert fast.model_id == onnx_model_id(card, backend) != embedder.model_id
    tag = "+int8@" if backend == "onnx-int8" else "+onnx@"
    assert fast.model_id.startswith(embedder.model_id + tag)
    vectors = fast.encode(TEXTS)
    reference = embedder.encode(TEXTS)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (vectors * reference).sum(axis=1).min() > min_cosine
    # batch order must not change a text's vector: longest-first batching puts rows back where they came from
    np.testing.assert_allclose(fast.encode(TEXTS[::-1])[::-1], vectors, atol=1e-5)
    assert fast.encode([]).shape == (0, 384)


def test_long_texts_go_in_smaller_batches_and_every_text_keeps_its_place():
    lengths = np.random.default_rng(7).integers(3, 400, size=500)
    batches = length_batches(lengths, batch_size=64)
    rows = np.concatenate(batches)
    assert sorted(rows) == list(range(500))
    assert list(lengths[rows]) == sorted(lengths, reverse=True)
    for batch in batches:
        assert len(batch) == 1 or len(batch) * lengths[batch].max() ** 2 <= 64 * FULL_BATCH_TOKENS ** 2
    # texts no longer than FULL_BATCH_TOKENS, nearly all of a round, keep full batches
    short = [b for b in batches if lengths[b].max() <= FULL_BATCH_TOKENS]
    assert len(short) >= 2 and all(len(b) == 64 for b in short[:-1])


def test_a_round_with_very_long_passages_gets_the_same_vectors_in_small_batches(onnx_copies, embedder):
    folder, _ = onnx_copies
    fast = load_embedder(embedder.model_name, 8, "onnx", str(folder))
    # one past the model's limit (truncated as torch truncates it), some over FULL_BATCH_TOKENS, many short
    long_text = " ".join(TEXTS * 12)
    texts = [long_text, *TEXTS, long_text[:1000], long_text[:750]] + [f"{t} ({i})" for i, t in enumerate(TEXTS * 3)]
    lengths = token_lengths(fast.model, texts)
    assert max(lengths) == fast.model.max_seq_length and sum(n > FULL_BATCH_TOKENS for n in lengths) == 3
    assert len(length_batches(lengths, 8)[0]) < 8
    np.testing.assert_allclose(fast.encode(texts), embedder.encode(texts), atol=2e-4)


def test_a_long_run_opens_a_fresh_session_and_the_vectors_do_not_change(onnx_copies, embedder, monkeypatch):
    from pipeline import onnx_backend

    folder, _ = onnx_copies
    texts = [f"{t} ({i})" for i, t in enumerate(TEXTS * 4)]
    runtime = onnx_backend.OnnxTransformer(folder / ONNX_FILES["onnx"])
    reference = runtime.encode(embedder.model, texts, 4)
    monkeypatch.setattr(onnx_backend, "RENEW_SESSION_AFTER_TEXTS", 6)
    sessions = []
    original = runtime.run

    def run(features):
        hidden = original(features)
        sessions.append(runtime.session)  # the session that ran; held, so no two can share an id
        return hidden
    monkeypatch.setattr(runtime, "run", run)
    renewed = runtime.encode(embedder.model, texts, 4)
    # 20 texts in batches of 4 on a session already past 6: a new one at once, then after every 8 texts
    assert len({id(s) for s in sessions}) == 3 and len(sessions) == 5
    np.testing.assert_allclose(renewed, reference, atol=1e-6)


def test_the_two_ids_differ_so_backends_never_share_vectors(onnx_copies):
    _, card = onnx_copies
    assert len({onnx_model_id(card, b) for b in ONNX_BACKENDS}) == 2


def test_a_changed_onnx_file_is_refused_and_rebuilt(tmp_path, embedder, codebook):
    small = replace(codebook, codes=codebook.codes[:3])
    folder = onnx_folder(tmp_path, embedder.model_id)
    build_onnx_copies(embedder.model, embedder.model_id, folder, small)
    data = bytearray((folder / ONNX_FILES["onnx"]).read_bytes())
    data[-100] ^= 0xFF
    (folder / ONNX_FILES["onnx"]).write_bytes(bytes(data))
    assert read_card(folder) is None
    with pytest.raises(ConfigError, match="holds no ONNX copies"):
        load_embedder(embedder.model_name, embedder.batch_size, "onnx", str(folder))
    settings = Settings.load(encoders_dir=tmp_path, tune_encoder=False, backend="onnx")
    fast = steps.inference_encoder(settings, embedder, small)  # rebuilds the copies
    assert read_card(folder) is not None and fast.backend == "onnx"


def test_auto_takes_the_fastest_copy_that_clears_its_bar(onnx_copies, embedder, codebook, tmp_path):
    folder, card = onnx_copies
    encoders = folder.parent.parent
    auto = Settings.load(encoders_dir=encoders, tune_encoder=False)
    expected = next((b for b in ONNX_BACKENDS if card["copies"][b]["agrees_with_torch"]), "torch")
    assert steps.inference_encoder(auto, embedder, codebook).backend == expected
    assert steps.inference_encoder(replace(auto, backend="torch"), embedder, codebook) is embedder
    for backend in ONNX_BACKENDS:
        assert steps.inference_encoder(replace(auto, backend=backend), embedder, codebook).backend == backend
    small = replace(codebook, codes=codebook.codes[:4])
    # int8 clearing a lenient bar is preferred to fp32
    lenient = onnx_folder(tmp_path / "lenient", embedder.model_id)
    built = build_onnx_copies(embedder.model, embedder.model_id, lenient, small,
                              bars={**BARS, "onnx-int8": AgreementBar(0.5, 0.5)})
    assert built["copies"]["onnx-int8"]["agrees_with_torch"]
    chosen = steps.inference_encoder(replace(auto, encoders_dir=tmp_path / "lenient"), embedder, small)
    assert chosen.backend == "onnx-int8"
    # bars nothing clears: torch
    strict = onnx_folder(tmp_path / "strict", embedder.model_id)
    build_onnx_copies(embedder.model, embedder.model_id, strict, small,
                      bars={b: AgreementBar(1.01, 1.01) for b in ONNX_BACKENDS})
    assert steps.inference_encoder(replace(auto, encoders_dir=tmp_path / "strict"), embedder, small) is embedder


def test_an_unknown_backend_is_refused(embedder):
    with pytest.raises(ConfigError, match="backend 'gpu' is not one of auto, onnx, onnx-int8, torch"):
        Settings.load(backend="gpu")
    with pytest.raises(ConfigError, match="needs one of onnx-int8, onnx and a folder"):
        load_embedder(embedder.model_name, embedder.batch_size, "onnx", None)
