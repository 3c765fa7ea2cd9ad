"""pipeline/embed.py with the real bundled all-MiniLM-L6-v2 model."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.embed import Embedder, KeptEmbeddings, embed_with_cache, resolve_model
from pipeline.errors import ConfigError
from pipeline.schemas import text_hash
from pipeline.store import Store

pytestmark = pytest.mark.slow


def test_model_ids_name_the_model_and_its_weights(embedder):
    name, digest = embedder.model_id.split("@")
    assert name == "sentence-transformers/all-MiniLM-L6-v2"
    assert digest.startswith("53aa5117")
    assert resolve_model("minilm")[1] == embedder.model_id
    default = "sentence-transformers/all-mpnet-base-v2@78c0197b"
    assert resolve_model("default")[1] == resolve_model("")[1] == resolve_model("mpnet")[1] == default


def test_local_folder_without_weights_gets_a_local_id(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert resolve_model(str(folder)) == (str(folder.resolve()), "my-model@local")
    assert resolve_model("org/some-model") == ("org/some-model", "org/some-model")


def test_encode_returns_unit_float32_rows(embedder):
    vectors = embedder.encode(["We pooled budgets with health.", "Staff were worried.", "Hello."])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.dimension == 384
    empty = embedder.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


def test_related_sentences_are_closer_than_unrelated(embedder):
    anchor, related, unrelated = embedder.encode([
        "We pooled our budget with the NHS trust to run one care team.",
        "The council and the health service now share a joint budget for care.",
        "My cat likes to sleep on the windowsill in the afternoon sun.",
    ])
    assert float(anchor @ related) > float(anchor @ unrelated) + 0.2


def test_token_budget_leaves_room_for_special_tokens(embedder):
    assert embedder.max_tokens == embedder.model.max_seq_length - 2
    assert embedder.count_tokens("budget") >= 1
    assert embedder.count_tokens("We pooled budgets.") < embedder.count_tokens("We pooled budgets. " * 5)


def test_embed_with_cache_computes_only_missing_texts(embedder, tmp_path):
    texts = ["The leader set a bold vision.", "We shared services with the district.", "Budgets were cut."]
    with Store(tmp_path / "q.duckdb") as store:
        first, computed = embed_with_cache(texts, embedder, store)
        assert computed == 3
        assert first.shape == (3, 384) and first.dtype == np.float32
        assert store.count("embeddings") == 3
        np.testing.assert_allclose(first, embedder.encode(texts), atol=1e-5)

        again, computed = embed_with_cache(texts, embedder, store)
        assert computed == 0
        assert np.array_equal(again, first)  # exactly the stored float32 vectors

        more = [texts[2], "Residents helped design the service."]
        vectors, computed = embed_with_cache(more, embedder, store)
        assert computed == 1
        assert store.count("embeddings") == 4
        assert np.array_equal(vectors[0], first[2])
        stored = store.cached_embeddings(embedder.model_id, [text_hash(more[1])])
        assert np.array_equal(stored[text_hash(more[1])], vectors[1])

    # The cache lives in the file: a new Store on it computes nothing.
    with Store(tmp_path / "q.duckdb") as store:
        assert embed_with_cache(texts, embedder, store)[1] == 0


def test_duplicates_in_one_call_are_encoded_once(embedder, tmp_path):
    texts = ["Same words.", "Other words.", "Same words.", "Same words."]
    with Store(tmp_path / "q.duckdb") as store:
        vectors, computed = embed_with_cache(texts, embedder, store)
        assert computed == 2
        assert store.count("embeddings") == 2
    assert vectors.shape == (4, 384)
    assert np.array_equal(vectors[0], vectors[2]) and np.array_equal(vectors[0], vectors[3])
    assert not np.array_equal(vectors[0], vectors[1])


def test_embed_with_cache_of_nothing(embedder, tmp_path):
    with Store(tmp_path / "q.duckdb") as store:
        vectors, computed = embed_with_cache([], embedder, store)
    assert vectors.shape == (0, 384) and computed == 0


def test_kept_vectors_serve_a_new_database_without_encoding(embedder, tmp_path):
    texts = ["Leaders who protect time to experiment.", "Procurement rules that slow every pilot."]
    folder = tmp_path / "vectors"
    with Store(tmp_path / "first.duckdb") as store:
        first, computed = embed_with_cache(texts, embedder, KeptEmbeddings(folder, store))
        assert computed == 2 and store.count("embeddings") == 2
    assert [p.name for p in folder.iterdir()] == [KeptEmbeddings(folder, None).path(embedder.model_id).name]
    with Store(tmp_path / "second.duckdb") as store:
        again, computed = embed_with_cache(texts + ["A third sentence."], embedder, KeptEmbeddings(folder, store))
        assert computed == 1
        assert np.array_equal(again[:2], first)
        # copied into the new database, so readers of the database alone find them
        assert embed_with_cache(texts, embedder, store)[1] == 0
    # another model id finds nothing in the folder
    with Store(tmp_path / "third.duckdb") as store:
        assert KeptEmbeddings(folder, store).cached_embeddings("other-model", [text_hash(texts[0])]) == {}


def test_a_damaged_vector_file_is_ignored_and_rewritten(embedder, tmp_path, caplog):
    texts = ["Councillors asked for evidence first."]
    folder = tmp_path / "vectors"
    path = KeptEmbeddings(folder, None).path(embedder.model_id)
    folder.mkdir()
    path.write_bytes(b"not a numpy file")
    with Store(tmp_path / "q.duckdb") as store:
        vectors, computed = embed_with_cache(texts, embedder, KeptEmbeddings(folder, store))
    assert computed == 1 and "ignoring kept vectors" in caplog.text
    with Store(tmp_path / "fresh.duckdb") as store:
        again, computed = embed_with_cache(texts, embedder, KeptEmbeddings(folder, store))
    assert computed == 0 and np.array_equal(again, vectors)


def test_unknown_model_raises_config_error_mentioning_offline():
    with pytest.raises(ConfigError) as caught:
        Embedder("no-such-org/qcode-no-such-model")
    message = str(caught.value)
    assert "'no-such-org/qcode-no-such-model'" in message
    assert "offline" in message
