"""Fine-tune the sentence encoder on the codebook itself, once per codebook version and base model.

Why: an off-the-shelf encoder places other people's language about leadership
(report prose, real interview quotes) far from our codebook's wording. Pulling
each code's include notes, restatements and example utterances towards that code's label and
definition, against the other codes in the same batch (in-batch negatives),
teaches the encoder what the codebook distinguishes. Measured by
``bench/quality.py``: real report prose top-1 0.35 -> 0.57 with the codebook
coder, while our own development set stays above 0.70.

``qcode train`` tunes that encoder further on reviewers' gold (``tune_on_gold``):
the same loss, with gold passages as anchors and codebook pairs replayed.
The result is kept with the trained model (``pipeline/learn_steps.py``).

The tuned encoder is an artifact: ``models/encoders/<name>/`` holds the
sentence-transformers folder and ``card.json`` / ``card.md`` (base model and
its weights hash, codebook version, training data hash, settings, seed, the
tuned weights' hash). It is built once and reused; a folder whose weights no
longer match its card is refused and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from pipeline.schemas import Codebook, Code, file_has_sha256, file_sha256

log = logging.getLogger("qcode.tune")

CARD = "card.json"


@dataclass(frozen=True)
class TuningParams:
    """How the encoder is tuned; part of the artifact's name, so a change builds a new one.

    Two epochs took 74 s on 2 cores for the shipped codebook's 504 pairs, and 125 s for its 840 since
    it has restatements; four gave no further gain on our development set.
    """

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 2e-5
    scale: float = 20.0
    seed: int = 0

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:6]


def code_description(code: Code) -> str:
    """The text that stands for a code: its label and definition."""
    return f"{code.label}. {code.definition}"


def codebook_pairs(codebook: Codebook) -> list[tuple[str, str]]:
    """(anchor text, code id): every include note, restatement and example utterance, to be pulled towards its code.

    Examples
    --------
    >>> from pipeline.schemas import Code, Codebook
    >>> code = Code("LA02", "leadership action", "Partnerships", "Working with others.", "x",
    ...             include=("Joint ventures",), examples=("We share a service with the county.",))
    >>> codebook_pairs(Codebook("b", "v1", (code,), (), ()))
    [('Joint ventures', 'LA02'), ('We share a service with the county.', 'LA02')]
    """
    return [(text, code.id) for code in codebook.codes
            for text in (*code.include, *code.restatements, *code.examples)]


def training_data_hash(codebook: Codebook) -> str:
    digest = hashlib.sha256()
    for code in codebook.codes:
        digest.update(json.dumps([code.id, code_description(code)]).encode())
    for anchor, code_id in codebook_pairs(codebook):
        digest.update(json.dumps([anchor, code_id]).encode())
    return digest.hexdigest()[:16]


def fine_tune(model, codebook: Codebook, params: TuningParams = TuningParams(),
              progress: Callable[[int, int], None] | None = None) -> float:
    """Tune a sentence-transformers ``model`` in place on the codebook; returns the last batch's loss.

    Each batch holds anchors of several codes; every anchor is scored against
    the descriptions of the codes present in its batch and trained, with
    cross-entropy, to pick its own (MultipleNegativesRanking with the code's
    description as the shared positive, so same-code anchors are never
    negatives of each other).
    """
    pairs = [(text, code_id, frozenset()) for text, code_id in codebook_pairs(codebook)]
    return _contrastive_training(model, pairs, _descriptions(codebook), params, progress)


def _descriptions(codebook: Codebook) -> dict[str, str]:
    return {code.id: code_description(code) for code in codebook.codes}


def _contrastive_training(model, pairs: list[tuple[str, str, frozenset]], descriptions: dict[str, str], params,
                          progress: Callable[[int, int], None] | None) -> float:
    """Pull each (anchor, code, the anchor's other codes) towards its code's description, away from the other
    codes in its batch; an anchor's other codes are masked, since a passage with two codes is no negative of
    either."""
    import torch

    torch.manual_seed(params.seed)
    order = random.Random(params.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=params.learning_rate)
    steps = params.epochs * -(-len(pairs) // params.batch_size)
    done, loss = 0, float("nan")
    model.train()
    try:
        for _ in range(params.epochs):
            shuffled = pairs[:]
            order.shuffle(shuffled)
            for start in range(0, len(shuffled), params.batch_size):
                batch = shuffled[start:start + params.batch_size]
                codes = sorted({code_id for _, code_id, _ in batch})
                anchors = _embed(model, [text for text, _, _ in batch])
                targets = _embed(model, [descriptions[c] for c in codes])
                logits = params.scale * anchors @ targets.T
                also = torch.tensor([[c in others for c in codes] for _, _, others in batch], dtype=torch.bool)
                logits = logits.masked_fill(also, -1e4)
                labels = torch.tensor([codes.index(code_id) for _, code_id, _ in batch])
                batch_loss = torch.nn.functional.cross_entropy(logits, labels)
                optimiser.zero_grad()
                batch_loss.backward()
                optimiser.step()
                loss = float(batch_loss.detach())
                done += 1
                if progress:
                    progress(done, steps)
    finally:
        model.eval()
    return loss


@dataclass(frozen=True)
class GoldTuningParams:
    """How ``qcode train`` tunes the codebook-tuned encoder further on reviewers' gold.

    Every gold passage is paired with each of its codes; the pairs are repeated
    until they about match ``replay`` codebook pairs drawn at random, which are
    mixed in so the encoder keeps what the codebook taught it. Chosen on our
    gold set by council and checked by cross-validation on real report prose
    (README, "Learning from reviewers").
    """

    epochs: int = 2
    replay: int = 300
    batch_size: int = 32
    learning_rate: float = 2e-5
    scale: float = 20.0
    seed: int = 0


def gold_pairs(codebook: Codebook, texts: list[str], codes: list[tuple[str, ...]], params: GoldTuningParams
               ) -> list[tuple[str, str, frozenset]]:
    """The training pairs of a gold tuning: gold (repeated) and replayed codebook pairs.

    A reviewed passage with no code has no description to be pulled towards;
    it still teaches the heads (``TrainedCoder``) that it is a negative.

    Examples
    --------
    >>> from pipeline.schemas import Code, Codebook
    >>> code = Code("LA02", "leadership action", "Partnerships", "Working with others.", "x",
    ...             examples=("We share a service with the county.",))
    >>> book = Codebook("b", "v1", (code,), (), ())
    >>> gold_pairs(book, ["We run leisure with the county.", "Hello."], [("LA02",), ()],
    ...            GoldTuningParams(replay=1))
    [('We run leisure with the county.', 'LA02', frozenset()), ('We share a service with the county.', 'LA02', frozenset())]
    """
    reviewed = [(text, code_id, frozenset(own) - {code_id}) for text, own in zip(texts, codes) for code_id in own]
    if not reviewed:
        return []
    replayed = codebook_pairs(codebook)
    replayed = random.Random(params.seed).sample(replayed, min(params.replay, len(replayed)))
    repeat = max(1, round(len(replayed) / len(reviewed)))
    return reviewed * repeat + [(text, code_id, frozenset()) for text, code_id in replayed]


def tune_on_gold(model, codebook: Codebook, texts: list[str], codes: list[tuple[str, ...]],
                 params: GoldTuningParams = GoldTuningParams(),
                 progress: Callable[[int, int], None] | None = None):
    """A copy of ``model`` tuned on gold passages (``texts`` with their reviewers' ``codes``); ``model`` is kept."""
    import copy

    tuned = copy.deepcopy(model)
    pairs = gold_pairs(codebook, texts, codes, params)
    if pairs:
        _contrastive_training(tuned, pairs, _descriptions(codebook), params, progress)
    return tuned


def _embed(model, texts: list[str]):
    import torch

    features = model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
    return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)


def encoder_folder(encoders_dir: Path, base_model_id: str, codebook: Codebook, params: TuningParams) -> Path:
    """Where the tuned encoder for this base model, codebook version and settings lives."""
    base = base_model_id.rsplit("/", 1)[-1].replace("@", "-")
    return Path(encoders_dir) / f"{base}-tuned-{codebook.version}-{params.digest()}"


def weights_hash(folder: Path) -> str:
    return file_sha256(folder / "model.safetensors")


def usable(folder: Path) -> bool:
    """True when ``folder`` holds a tuned encoder whose weights match its card."""
    try:
        card = json.loads((Path(folder) / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return file_has_sha256(Path(folder) / "model.safetensors", card.get("weights_sha256"))


def build_tuned_encoder(base_model, base_model_id: str, codebook: Codebook, encoders_dir: Path,
                        params: TuningParams = TuningParams(),
                        progress: Callable[[int, int], None] | None = None) -> Path:
    """The tuned encoder's folder: reused when it is there and intact, otherwise trained now and saved.

    ``base_model`` is the loaded sentence-transformers model of ``base_model_id``;
    it is deep-copied, never changed.
    """
    import copy

    folder = encoder_folder(encoders_dir, base_model_id, codebook, params)
    if usable(folder):
        return folder
    if folder.exists():
        log.warning("tuned encoder %s does not match its card; building it again", folder.name)
        shutil.rmtree(folder)
    started = time.perf_counter()
    model = copy.deepcopy(base_model)
    last_loss = fine_tune(model, codebook, params, progress)
    card = {
        "kind": "tuned encoder", "base_model_id": base_model_id, "codebook": codebook.name,
        "codebook_version": codebook.version, "training_data_hash": training_data_hash(codebook),
        "training_pairs": len(codebook_pairs(codebook)), "params": asdict(params), "last_batch_loss": last_loss,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return save_encoder(model, folder, card, _card_markdown)


def save_encoder(model, folder: Path, card: dict, markdown: Callable[[dict], str]) -> Path:
    """Save a tuned encoder with its card (the weights' sha256 and build time added); the folder appears whole
    or not at all (built aside, then renamed), so a killed build leaves nothing half-written."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        model.save(str(staging))
        card = {**card, "weights_sha256": weights_hash(staging),
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (staging / CARD).write_text(json.dumps(card, indent=2), encoding="utf-8")
        (staging / "card.md").write_text(markdown(card), encoding="utf-8")
        try:
            staging.rename(folder)
        except OSError:  # another process finished the same build first: keep that one
            if not usable(folder):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _card_markdown(card: dict) -> str:
    params = ", ".join(f"{k} {v}" for k, v in card["params"].items())
    return (f"# Tuned encoder for codebook {card['codebook']} {card['codebook_version']}\n\n"
            f"- base model: {card['base_model_id']}\n"
            f"- training data: {card['training_pairs']} include notes, restatements and example utterances paired with their "
            f"code's label and definition (hash {card['training_data_hash']}); all written for this project\n"
            f"- settings: {params}\n"
            f"- built {card['built_at']} in {card['seconds']} s; last batch loss {card['last_batch_loss']:.3f}\n"
            f"- weights sha256 {card['weights_sha256']}\n\n"
            "Quality figures: run `python bench/quality.py` (README, 'How codes are suggested').\n")
