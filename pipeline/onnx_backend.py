"""ONNX Runtime copies of a sentence encoder, fp32 and int8: built once per encoder, checked against torch, used when they agree.

Why: encoding is nearly all of a cold run's time. On these CPUs the same
transformer exported to ONNX runs in ONNX Runtime at fp32 with the same vectors
(cosine 1.0000), 1.3-1.5x faster than torch on short texts and about 1.06x on
interview passages of 4-9 sentences (mpnet, bench/RESULTS.md); a dynamically
quantised copy (int8 weights per output channel) faster still but with cosine
about 0.99 (MiniLM) or 0.84 (mpnet tuned on the codebook) to torch's vectors.
Whether a copy is close enough depends on the coder: the zero-shot coder's best
and second-best codes often lie within 0.01 of each other, so each copy is
checked against torch on the codebook's own texts and used by default only
when it picks the same nearest code almost always (``AgreementBar``, one per
backend in ``BARS``). Only the transformer runs in ONNX Runtime; tokenising,
pooling and normalising stay the sentence-transformers model's own modules, so
a copy computes what the model computes.

sentence-transformers' own ONNX backend needs ``optimum-onnx``, whose releases
pin transformers < 4.58 while sentence-transformers 6 needs transformers >= 5,
so the export here uses ``torch.onnx`` and ``onnxruntime.quantization``
directly.

The copies are artifacts: ``<encoders dir>/onnx/<name>/`` holds
``model-fp32.onnx``, ``model-int8.onnx`` and ``card.json`` (the torch model id
they were made from, each file's sha256, the agreement each measured against
torch on the codebook's own texts, and whether that passed). A folder whose
files no longer match its card is rebuilt. Vectors a copy computes are stored
under its own model id, never mixed with torch's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.embed import encode_with
from pipeline.schemas import Codebook, file_has_sha256, file_sha256, slugify

log = logging.getLogger("qcode.onnx")

CARD = "card.json"
FORMAT = 2
"""Bumped when the export or quantisation recipe changes, so old copies are rebuilt."""
ONNX_BACKENDS = ("onnx-int8", "onnx")
"""The ONNX backends in the order ``auto`` prefers them: fastest first."""
ONNX_FILES = {"onnx": "model-fp32.onnx", "onnx-int8": "model-int8.onnx"}
MODEL_ID_TAGS = {"onnx": "onnx", "onnx-int8": "int8"}


@dataclass(frozen=True)
class AgreementBar:
    """How closely a copy must match torch on the calibration texts to be used without being asked for.

    Calibration: each of the codebook's include notes, restatements and examples is matched to its nearest
    code description (label and definition) under each backend. Measured for MiniLM tuned on the shipped
    codebook, int8: mean cosine 0.992, nearest-code agreement 0.939, so ``auto`` passes it over; on the sample
    round that copy gave the same applied codes for 0.89 of passages and the same top code for 0.93.
    """

    mean_cosine: float = 0.98
    nearest_code_agreement: float = 0.98


BARS = {"onnx": AgreementBar(mean_cosine=0.9999, nearest_code_agreement=0.995), "onnx-int8": AgreementBar()}
"""fp32 must give torch's vectors up to rounding; int8 is allowed its quantisation error if codes stay put."""


def onnx_folder(encoders_dir: Path, model_id: str) -> Path:
    """Where the ONNX copies of the encoder ``model_id`` are kept (the id carries the torch weights' digest)."""
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:10]
    return Path(encoders_dir) / "onnx" / f"{slugify(model_id.split('/')[-1])[:60]}-{digest}"


def read_card(folder: Path) -> dict | None:
    """The folder's card if its ONNX files are the ones the card describes, else None."""
    try:
        card = json.loads((folder / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if card.get("format") != FORMAT or set(card.get("copies", {})) != set(ONNX_BACKENDS):
        return None
    for backend, copy in card["copies"].items():
        onnx_file = folder / ONNX_FILES[backend]
        if not file_has_sha256(onnx_file, copy.get("sha256")):
            log.warning("%s is missing or does not match its card; the copies will be rebuilt", onnx_file)
            return None
    return card


def build_onnx_copies(model, model_id: str, folder: Path, codebook: Codebook, batch_size: int = 64,
                      bars: dict[str, AgreementBar] = BARS) -> dict:
    """Export ``model``'s transformer to ONNX, quantise a second copy to int8, measure both against torch and
    write their card.

    ``model`` is a loaded sentence-transformers model whose first module is its transformer. Built in a
    temporary folder and moved into place, so a run killed halfway leaves nothing half-written.

    Examples
    --------
    >>> card = build_onnx_copies(model, model_id, onnx_folder(encoders, model_id), codebook)  # doctest: +SKIP
    >>> card["copies"]["onnx"]["agrees_with_torch"]  # doctest: +SKIP
    True
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        input_names = _export(model, work / ONNX_FILES["onnx"])
        logging.disable(logging.WARNING)  # its advice to pre-process is for static quantisation, not this
        try:
            quantize_dynamic(str(work / ONNX_FILES["onnx"]), str(work / ONNX_FILES["onnx-int8"]), per_channel=True,
                             op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        texts, k = calibration_texts(codebook)
        reference = encode_with(model, texts, batch_size)
        copies = {}
        for backend in ONNX_BACKENDS:
            vectors = OnnxTransformer(work / ONNX_FILES[backend]).encode(model, texts, batch_size)
            agreement = compare_vectors(reference, vectors, k)
            bar = bars[backend]
            copies[backend] = {
                "file": ONNX_FILES[backend], "sha256": file_sha256(work / ONNX_FILES[backend]),
                "weights": ("dynamic int8, per-channel weights, MatMul only" if backend == "onnx-int8" else "fp32"),
                "calibration": {"codebook_version": codebook.version, **agreement}, "bar": asdict(bar),
                "agrees_with_torch": bool(agreement["mean_cosine"] >= bar.mean_cosine
                                          and agreement["nearest_code_agreement"] >= bar.nearest_code_agreement),
            }
        card = {"format": FORMAT, "base_model_id": model_id, "inputs": input_names, "copies": copies,
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (work / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return card


def onnx_model_id(card: dict, backend: str) -> str:
    """The id a copy's vectors and codings are stored under: never the torch model's own."""
    return f"{card['base_model_id']}+{MODEL_ID_TAGS[backend]}@{card['copies'][backend]['sha256'][:8]}"


def _export(model, path: Path) -> list[str]:
    import torch

    transformer = model[0].auto_model.eval()
    sample = _tokenise(model, ["A short sentence.", "A second, slightly longer sentence to pad against."])
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs))).last_hidden_state

    axes = {name: {0: "batch", 1: "tokens"} for name in (*names, "token_embeddings")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHiddenState(transformer), tuple(sample[n] for n in names), str(path),
                          input_names=names, output_names=["token_embeddings"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    return names


RENEW_SESSION_AFTER_TEXTS = 2048
"""A fresh ONNX Runtime session after this many texts (one ``steps.EMBED_CHUNK``): the old one's arena is given back."""


class OnnxTransformer:
    """The ONNX Runtime session that stands in for a sentence-transformers model's transformer module.

    ONNX Runtime's memory arena only grows, and over a long run it kept extending part-way through, so a
    round of 1,000 interviews ended with more memory than one of 100 (MiniLM, ONNX Runtime alone: +500 MB
    against +309 MB). A fresh session every ``RENEW_SESSION_AFTER_TEXTS`` texts hands that memory back:
    the whole embed stage peaked at 1,136 MB at 1,000 interviews against 1,006 MB at 100 (1,331 against
    1,003 with one session; 1,178 against 990 renewing every 8,192 texts). Opening one took 0.12 s for
    MiniLM, against about 13 s to encode 2,048 passages.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._open()

    def _open(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = None  # the old session's arena goes before the new one's is made
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.texts_since_open = 0

    def run(self, features: dict) -> np.ndarray:
        """The transformer's last hidden state for one tokenised batch."""
        if self.texts_since_open >= RENEW_SESSION_AFTER_TEXTS:
            self._open()
        hidden = self.session.run(None, {n: features[n].numpy().astype(np.int64) for n in self.input_names})[0]
        self.texts_since_open += len(hidden)
        return hidden

    def encode(self, model, texts: Sequence[str], batch_size: int, progress=None) -> np.ndarray:
        """Unit-length float32 vectors, tokenised and pooled by ``model``'s own modules; longest texts first, in
        batches from ``length_batches``, so padding stays small and so does ONNX Runtime's memory."""
        import torch

        out: np.ndarray | None = None
        done = 0
        with torch.inference_mode():
            for rows in length_batches(token_lengths(model, texts), batch_size):
                features = _tokenise(model, [texts[i] for i in rows])
                features = {**features, "token_embeddings": torch.from_numpy(self.run(features))}
                for module in list(model)[1:]:
                    features = module(features)
                vectors = torch.nn.functional.normalize(features["sentence_embedding"], dim=1).numpy()
                if out is None:
                    out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
                out[rows] = vectors
                done += len(rows)
                if progress:
                    progress(done, len(texts))
        return out


FULL_BATCH_TOKENS = 128
"""Texts up to this many tokens are encoded ``batch_size`` at a time; longer ones in smaller batches."""


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row indices in batches, longest first, each batch's attention no larger than a full batch of
    ``FULL_BATCH_TOKENS``-token texts: rows x tokens squared <= batch_size x ``FULL_BATCH_TOKENS`` squared.

    Why: ONNX Runtime keeps the largest working set any batch needed, and a fixed batch size makes that
    the longest texts' batch, whose attention grows with the square of its length. A bigger round holds
    longer outliers, so peak memory grew with the round (MiniLM, the 64 longest passages of a
    1,000-interview round took 471 MB of ONNX Runtime memory against 386 MB for a 100-interview round;
    batched this way 297 MB against 289). Short texts, nearly all of an interview round, keep full batches.

    >>> [len(b) for b in length_batches([300, 40, 256, 50, 130], batch_size=4)]
    [1, 1, 3]
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    limit = batch_size * FULL_BATCH_TOKENS ** 2
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(batch_size, limit // (longest * longest)))
        batches.append(order[start:start + size])
        start += size
    return batches


def token_lengths(model, texts: Sequence[str]) -> list[int]:
    """Each text's token count as the model truncates it (to order and size the batches; ``_tokenise`` makes
    the batches themselves: tokenising twice cost about 4 s of a 1,000-interview round's minutes of encoding)."""
    ids = model.tokenizer(list(texts), truncation=True, max_length=model.max_seq_length)["input_ids"]
    return [len(i) for i in ids]


def _tokenise(model, texts: list[str]) -> dict:
    """The model's own tokenisation and truncation (``preprocess`` in sentence-transformers >= 6, ``tokenize`` before)."""
    return (getattr(model, "preprocess", None) or model.tokenize)(texts)


def calibration_texts(codebook: Codebook) -> tuple[list[str], int]:
    """The code descriptions, then the codebook's include notes, restatements and examples; and how many
    descriptions lead the list."""
    from pipeline.tune import code_description, codebook_pairs

    descriptions = [code_description(code) for code in codebook.codes]
    return descriptions + [text for text, _ in codebook_pairs(codebook)], len(descriptions)


def compare_vectors(reference: np.ndarray, vectors: np.ndarray, k: int) -> dict:
    """Cosine between torch's and a copy's vectors of the calibration texts, and how often both pick the same
    nearest code (the first ``k`` rows are the code descriptions)."""
    cosine = (reference * vectors).sum(axis=1)
    nearest_reference = (reference[k:] @ reference[:k].T).argmax(axis=1)
    nearest_copy = (vectors[k:] @ vectors[:k].T).argmax(axis=1)
    return {"texts": len(reference), "mean_cosine": round(float(cosine.mean()), 5),
            "min_cosine": round(float(cosine.min()), 5),
            "nearest_code_agreement": round(float((nearest_reference == nearest_copy).mean()), 4)}
