"""pipeline/int8.py: the int8 ONNX copy of the real bundled encoder, its card, and how the backend is chosen."""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest

from pipeline import steps
from pipeline.config import Settings
from pipeline.embed import load_embedder
from pipeline.errors import ConfigError
from pipeline.int8 import CARD, ONNX_FILE, AgreementBar, build_int8_copy, int8_folder, int8_model_id, read_card

pytestmark = pytest.mark.slow

TEXTS = ["We pooled budgets with the health trust to fund the new service.",
         "The chief executive told us failure was allowed if we learned from it.",
         "Councillors kept sending the business case back.", "Hello.",
         "Our digital team was cut in half and the pilots stopped."]


@pytest.fixture(scope="module")
def int8_copy(tmp_path_factory, embedder, codebook):
    folder = int8_folder(tmp_path_factory.mktemp("encoders"), embedder.model_id)
    card = build_int8_copy(embedder.model, embedder.model_id, folder, codebook)
    return folder, card


def test_the_copy_has_a_card_that_names_its_source_file_and_agreement(int8_copy, embedder, codebook):
    folder, card = int8_copy
    assert sorted(p.name for p in folder.iterdir()) == [CARD, ONNX_FILE]
    assert card == json.loads((folder / CARD).read_text())
    assert card["base_model_id"] == embedder.model_id
    calibration = card["calibration"]
    assert calibration["codebook_version"] == codebook.version
    assert calibration["texts"] == len(codebook.codes) + sum(
        len(c.include) + len(c.restatements) + len(c.examples) for c in codebook.codes)
    assert 0.9 < calibration["min_cosine"] <= calibration["mean_cosine"] <= 1.0
    assert card["agrees_with_fp32"] == (calibration["mean_cosine"] >= card["bar"]["mean_cosine"]
                                        and calibration["nearest_code_agreement"] >= card["bar"]["nearest_code_agreement"])
    # int8 layer weights (the 47 MB word-embedding table stays fp32): smaller than the fp32 weights
    fp32_bytes = (Path(embedder._location) / "model.safetensors").stat().st_size
    assert (folder / ONNX_FILE).stat().st_size < 0.7 * fp32_bytes
    assert read_card(folder) == card


def test_int8_vectors_are_close_to_fp32_and_stored_under_their_own_id(int8_copy, embedder):
    folder, card = int8_copy
    fast = load_embedder(embedder.model_name, embedder.batch_size, str(folder))
    assert fast.backend == "onnx-int8" and embedder.backend == "torch"
    assert fast.model_id == int8_model_id(card) != embedder.model_id
    assert fast.model_id.startswith(embedder.model_id + "+int8@")
    vectors = fast.encode(TEXTS)
    reference = embedder.encode(TEXTS)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = (vectors * reference).sum(axis=1)
    assert cosine.min() > 0.97
    # batch order must not change a text's vector: longest-first batching puts rows back where they came from
    np.testing.assert_allclose(fast.encode(TEXTS[::-1])[::-1], vectors, atol=1e-5)
    assert fast.encode([]).shape == (0, 384)


def test_a_changed_onnx_file_is_refused_and_rebuilt(tmp_path, embedder, codebook):
    small = replace(codebook, codes=codebook.codes[:3])
    folder = int8_folder(tmp_path, embedder.model_id)
    build_int8_copy(embedder.model, embedder.model_id, folder, small)
    data = bytearray((folder / ONNX_FILE).read_bytes())
    data[-100] ^= 0xFF
    (folder / ONNX_FILE).write_bytes(bytes(data))
    assert read_card(folder) is None
    with pytest.raises(ConfigError, match="not an int8 copy"):
        load_embedder(embedder.model_name, embedder.batch_size, str(folder))
    settings = Settings.load(encoders_dir=tmp_path, tune_encoder=False, backend="onnx-int8")
    fast = steps.inference_encoder(settings, embedder, small)  # rebuilds the copy
    assert read_card(folder) is not None and fast.backend == "onnx-int8"


def test_auto_uses_the_copy_only_when_it_clears_the_bar(int8_copy, embedder, codebook, tmp_path):
    folder, card = int8_copy
    encoders = folder.parent.parent
    auto = Settings.load(encoders_dir=encoders, tune_encoder=False)
    chosen = steps.inference_encoder(auto, embedder, codebook)
    assert chosen.backend == ("onnx-int8" if card["agrees_with_fp32"] else "torch")
    assert steps.inference_encoder(replace(auto, backend="torch"), embedder, codebook) is embedder
    assert steps.inference_encoder(replace(auto, backend="onnx-int8"), embedder, codebook).backend == "onnx-int8"
    # a copy that clears a lower bar is used by auto
    lenient = int8_folder(tmp_path, embedder.model_id)
    small = replace(codebook, codes=codebook.codes[:4])
    assert build_int8_copy(embedder.model, embedder.model_id, lenient, small, bar=AgreementBar(0.5, 0.5))["agrees_with_fp32"]
    assert steps.inference_encoder(replace(auto, encoders_dir=tmp_path), embedder, small).backend == "onnx-int8"


def test_an_unknown_backend_is_refused():
    with pytest.raises(ConfigError, match="backend 'gpu' is not one of auto, onnx-int8, torch"):
        Settings.load(backend="gpu")
