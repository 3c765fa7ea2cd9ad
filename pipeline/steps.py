"""The run workflow: the steps of ``qcode run`` and the nightly rerun, in order, as plain functions.

The review workflow (review files out and in, agreement) is in ``pipeline/review_steps.py``,
the learning workflow (training, evaluation, themes) in ``pipeline/learn_steps.py``.

Stages (ingest, anonymise, segment, embed, classify, summarise, report) are
pure; these steps wire them and keep I/O at their edges, so tests call them
directly and ``flows/`` wraps each one as a Prefect task. Every step opens the
database for its own work and closes it, keeping to DuckDB's one-writer rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from pipeline.anonymise import Anonymiser
from pipeline.classify import fit_zero_shot_coder, nearest_evidence
from pipeline.codebook import load_codebook
from pipeline.config import Settings
from pipeline.embed import EmbeddingCache, KeptEmbeddings, embed_with_cache, load_embedder
from pipeline.errors import QcodeError, TranscriptError, explain_system_error
from pipeline.gold import reconcile_gold
from pipeline.html_report import LAYOUT_VERSION as HTML_LAYOUT, round_facts, write_council_page, write_index_page
from pipeline.onnx_backend import ONNX_BACKENDS, build_onnx_copies, onnx_folder
from pipeline.onnx_backend import read_card as read_onnx_card
from pipeline.ingest import (META_FIELDS, GateMemo, body_findings, personal_data_reason, read_known_names,
                             read_round, record_unexpected_failure, round_key, round_warnings, split_turns)
from pipeline.report import (UNCHANGED, ExportResult, by_council, write_council_reports, write_councils_by_code,
                             write_run_report)
from pipeline.review import ReviewExport
from pipeline.schemas import Codebook, CodedPassage, IngestReport, Quarantined, SegmentedTranscript, Transcript, slugify
from pipeline.segment import segment_turns
from pipeline.spreadsheet import sha256_file
from pipeline.store import Store
from pipeline.tune import TuningParams, build_tuned_encoder, encoder_folder
from pipeline.tune import usable as tuned_encoder_usable
from pipeline.train import ModelMismatchError, load_model

log = logging.getLogger("qcode.steps")

EMBED_CHUNK = 2048
EMBED_DATABASE_MEMORY = "64MB"
"""DuckDB's buffer pool while the embed step writes vectors; the rest of a run keeps DuckDB's default."""


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def begin_run(settings: Settings, round_dir: Path | str, run_id: str) -> None:
    with Store(settings.db_path) as store:
        interrupted = store.mark_interrupted_runs()
        if interrupted:
            log.warning("%d earlier run(s) did not finish (killed or crashed); this run completes their work",
                        interrupted)
        store.start_run(run_id, str(round_dir))


def processing_fingerprint(settings: Settings, known_names: list[str]) -> str:
    """Everything besides a file's bytes that shapes its stored passages: a change means reprocessing."""
    parts = [sorted(known_names), settings.anonymisation_policy, sorted(settings.interviewer_labels),
             sorted(settings.respondent_labels), settings.max_sentences_per_passage, settings.model_name]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def ingest_log(settings: Settings, run_id: str) -> Path:
    """Where a run's unforeseen per-file failures are written (tracebacks, never text): logs/ beside the database."""
    return settings.db_path.parent / "logs" / f"ingest-{run_id}.log"


def ingest_round(round_dir: Path, settings: Settings, run_id: str) -> IngestReport:
    """Read, anonymise, split and segment every new or changed file of a round and store it.

    A file whose bytes, manifest row and processing settings are unchanged is
    recognised by hash and skipped, its name and metadata not gated again (the
    gate's reading of each file is remembered in the database, see
    ``GateMemo``): a rerun with one new interview gates that one, and a rerun
    with none never loads the entity model. A file that cannot be used is quarantined
    with its reason and the others go on, whatever the failure, unless the
    machine itself fails (a full disk, say), which stops the run. Files are
    reported by their gated labels. A file is one interview, known by its path
    in the round folder: when its metadata moves it to another council or
    interview id, or the file is gone from the folder, the interview it held is
    retired (kept, with its reviewers' decisions, but out of the reports).
    """
    round_dir = Path(round_dir)
    known_names = read_known_names(round_dir)
    gate = Anonymiser(known_names)  # its entity model loads only when a file is gated
    error_log = ingest_log(settings, run_id)
    memo_key = f"gated:{round_key(round_dir)}"

    def remembered() -> dict:
        with Store(settings.db_path) as store:
            return store.get_state(memo_key) or {}

    memo = GateMemo(remembered)
    transcripts, quarantined = read_round(round_dir, gate, error_log, memo)
    gate = gate.allowing(t.meta.council for t in transcripts)  # council names in the bodies are not people's names
    fingerprint = processing_fingerprint(settings, known_names)
    report = IngestReport(files_seen=len(transcripts) + len(quarantined), quarantined=list(quarantined),
                          warnings=round_warnings(round_dir, gate))
    for warning in report.warnings:
        log.warning("%s", warning)
    for q in quarantined:
        log.warning("quarantined %s: %s", q.source, q.reason)
    embedder = None
    with Store(settings.db_path) as store:
        holders = store.file_holders(round_key(round_dir))  # what claiming an unchanged file would find
        for transcript in tqdm(transcripts, desc="ingest", unit="file", disable=None):
            if transcript.dropped_keys:
                warning = (f"{transcript.source}: front-matter key(s) {', '.join(transcript.dropped_keys)} are not "
                           f"metadata qcode knows, so their values were dropped; known keys: {', '.join(META_FIELDS)}")
                report.warnings.append(warning)
                log.warning("%s", warning)
            source_key = hashlib.sha256(f"{transcript.source_hash}:{fingerprint}".encode()).hexdigest()[:32]
            current = store.current_transcript(transcript.meta.key)
            if current and current[2] == source_key:
                if holders.get(transcript.file_key) != [(transcript.meta.key, transcript.source)]:
                    # renamed, relabelled, stored before files had keys, or held with another interview
                    store.claim_file(transcript.meta.key, transcript.source, transcript.round_key, transcript.file_key)
                report.unchanged.append(transcript.source)
                continue
            embedder = embedder or load_embedder(settings.model_name, settings.embed_batch_size)
            try:
                if settings.anonymisation_policy == "reject":
                    findings = list(transcript.findings) + body_findings(transcript, gate)
                    redacted, found = transcript.text, Counter(f.kind for f in findings)
                else:
                    findings = list(transcript.findings)
                    redacted, found = gate.redact(transcript.text)
                    found = found + Counter(f.kind for f in findings)
                if found:
                    report.redactions[transcript.source] = dict(sorted(found.items()))
                if findings and settings.anonymisation_policy == "reject":
                    raise TranscriptError(transcript.source, personal_data_reason(findings))
                clean = replace(transcript, text=redacted)
                turns = split_turns(redacted, settings.interviewer_labels, settings.respondent_labels,
                                    source=transcript.source)
                passages = segment_turns(clean, turns, max_sentences=settings.max_sentences_per_passage,
                                         max_tokens=embedder.max_tokens, count_tokens=embedder.count_tokens,
                                         count_many=embedder.count_tokens_many)
                if not passages:
                    raise TranscriptError(transcript.source, "has respondent turns but no sentences to code")
                status = store.save_transcript(SegmentedTranscript(clean, tuple(turns), tuple(passages)), run_id,
                                               source_key)
            except TranscriptError as exc:
                _quarantine(report, transcript, exc.reason)
                continue
            except Exception as exc:  # noqa: BLE001 - the file boundary: one file's failure never stops the round
                if isinstance(exc, QcodeError) or explain_system_error(exc):
                    raise  # the database or the machine failed, not this file: the run stops and says so
                _quarantine(report, transcript, record_unexpected_failure(transcript.source, exc, error_log))
                continue
            getattr(report, status).append(transcript.source)
        present = [t.file_key for t in transcripts] + [q.file_key for q in report.quarantined]  # every file listed
        report.retired = store.retire_missing_files(round_key(round_dir), present)
        store.set_state(memo_key, memo.kept)  # the files read this time: a file gone is forgotten
    for label in report.retired:
        log.warning("retired %s: it is no longer in the round folder, so its interview leaves the reports "
                    "(reviewers' decisions on it are kept)", label)
    return report


def _quarantine(report: IngestReport, transcript: Transcript, reason: str) -> None:
    report.quarantined.append(Quarantined(transcript.source, reason, transcript.file_key))
    log.warning("quarantined %s: %s", transcript.source, reason)


def embed_passages(settings: Settings) -> dict:
    """Embed the active passages whose text has no cached embedding yet, in chunks; returns counts."""
    with Store(settings.db_path) as store:
        embedder = active_encoder(settings, store, open_codebook(settings, store))
        missing = store.hashes_without_embedding(embedder.model_id)
        # One chunk's texts in memory at a time, and DuckDB kept from caching every vector it writes, so the
        # step's memory does not grow with every text of a large round (figures in bench/RESULTS.md).
        with store.memory_limit(EMBED_DATABASE_MEMORY):
            for start in tqdm(range(0, len(missing), EMBED_CHUNK), desc="embed", unit="chunk", disable=None):
                chunk = store.texts_of(missing[start:start + EMBED_CHUNK])
                store.save_embeddings(embedder.model_id, [h for h, _ in chunk],
                                      embedder.encode([t for _, t in chunk]))
        passages = store.count_active_passages()
    return {"passages": passages, "embedded": len(missing), "cache_hits": passages - len(missing),
            "model_id": embedder.model_id}


def coding_encoder(settings: Settings, codebook: Codebook | None = None):
    """The encoder that embeds passages for coding: the base model tuned on this codebook, or the base itself.

    The tuned encoder is built on first use for a codebook version (on 2 cores about 10 minutes for mpnet,
    2 for MiniLM, with a progress bar in a terminal) and reused from
    ``Settings.tuned_encoders_dir`` (``models/encoders/``) after that. With
    ``tune_encoder`` off, the base model (``--model``) is used as it is.
    """
    base = load_embedder(settings.model_name, settings.embed_batch_size)
    if not settings.tune_encoder:
        return base
    codebook = codebook or load_codebook(settings.codebook_path)
    params = TuningParams()
    folder = encoder_folder(settings.tuned_encoders_dir, base.model_id, codebook, params)
    if not tuned_encoder_usable(folder):
        notice = (f"tuning {base.model_id} on codebook {codebook.version} (once per codebook version and encoder; "
                  "on 2 cores about 10 minutes for the default mpnet, 2 for MiniLM)")
        log.warning("%s", notice)
        # Said on the terminal too, bar or no bar: a first run otherwise sits silent for minutes.
        tqdm.write(notice, file=sys.stderr)
        with batch_progress("tune encoder") as advance:
            folder = build_tuned_encoder(base.model, base.model_id, codebook, settings.tuned_encoders_dir, params,
                                         advance)
    return load_embedder(str(folder.resolve()), settings.embed_batch_size)


@contextmanager
def batch_progress(label: str):
    """A progress bar in a terminal (none in a log), fed by a ``progress(done, total)`` callback."""
    with tqdm(desc=label, unit="batch", disable=None) as bar:
        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
        yield advance


def open_codebook(settings: Settings, store: Store) -> Codebook:
    """Load the codebook, register its version and move gold off any ids it retired."""
    codebook = load_codebook(settings.codebook_path)
    reconcile_gold(store, codebook, settings.codebook_path)
    store.register_codebook(codebook)
    return codebook


class ActiveCoder(NamedTuple):
    coder: object
    coder_id: str
    embedder: object
    """The encoder whose vectors the coder reads: the one its model was trained with."""


def active_coder(settings: Settings, store: Store, codebook: Codebook) -> ActiveCoder:
    """The active trained model, with the encoder it was trained with, if it fits this codebook and base encoder;
    else the zero-shot coder on ``coding_encoder``. Either way the encoder runs on ``inference_encoder``'s backend."""
    base = coding_encoder(settings, codebook)
    trained = _active_trained_model(settings, store, codebook, base)
    if trained:
        return trained
    fast = inference_encoder(settings, base, codebook)
    coder, coder_id = fit_zero_shot_coder(codebook, fast, codebook_cache(settings, store))
    store.register_coder(coder_id, "zero-shot", fast.model_id, codebook.version,
                         dict(zip(coder.classes_, map(float, coder.thresholds_))))
    return ActiveCoder(coder, coder_id, fast)


def codebook_cache(settings: Settings, store: Store) -> EmbeddingCache:
    """Where the codebook's vectors are looked up and kept: beside the tuned encoders, for every database."""
    return KeptEmbeddings(settings.tuned_encoders_dir / "vectors", store)


def active_encoder(settings: Settings, store: Store, codebook: Codebook):
    """The encoder the active coder reads, without fitting a zero-shot coder when no trained one is active."""
    base = coding_encoder(settings, codebook)
    trained = _active_trained_model(settings, store, codebook, base)
    return trained.embedder if trained else inference_encoder(settings, base, codebook)


_told_backend_choice: set[Path] = set()


def inference_encoder(settings: Settings, embedder, codebook: Codebook, copies_dir: Path | None = None):
    """``embedder`` on the backend that computes coding vectors. ``auto`` (the default) takes the fastest of its
    ONNX Runtime copies that agrees with torch on the codebook's texts (int8, then fp32), else torch;
    ``onnx-int8`` and ``onnx`` take that copy whatever it measured; ``torch`` never uses a copy.

    Training, tuning and model identity stay on the torch encoder; the copies are built once per encoder
    (about 20 s for MiniLM, 2-3 minutes for mpnet) under ``copies_dir``/onnx (default
    ``Settings.tuned_encoders_dir``) and checked against their card on every load.
    """
    if settings.backend == "torch":
        return embedder
    folder = onnx_folder(copies_dir or settings.tuned_encoders_dir, embedder.model_id)
    card = read_onnx_card(folder)
    if card is None:
        notice = (f"building the ONNX Runtime copies (fp32, int8) of encoder {embedder.model_id} (once per encoder; "
                  "on 2 cores about 20 s for MiniLM, 2-3 minutes for mpnet)")
        log.warning("%s", notice)
        tqdm.write(notice, file=sys.stderr)  # minutes of silence otherwise, as for tuning
        card = build_onnx_copies(embedder.model, embedder.model_id, folder, codebook, settings.embed_batch_size)
        log.info("ONNX copies against torch on the codebook's texts: %s",
                 {backend: copy["calibration"] for backend, copy in card["copies"].items()})
    backend = settings.backend
    if backend == "auto":
        backend = next((b for b in ONNX_BACKENDS if card["copies"][b]["agrees_with_torch"]), "torch")
        if folder not in _told_backend_choice:  # once per process, not once per step
            _told_backend_choice.add(folder)
            log.info("coding with %s for %s (ONNX copies against torch: %s)", backend, embedder.model_id,
                     {b: card["copies"][b]["calibration"] for b in ONNX_BACKENDS})
        if backend == "torch":
            return embedder
    return load_embedder(embedder.model_name, embedder.batch_size, backend, str(folder.resolve()))


def _active_trained_model(settings: Settings, store: Store, codebook: Codebook, base) -> ActiveCoder | None:
    record = store.active_coder_record()
    if not record or record["kind"] != "trained":
        return None
    try:
        coder, card = load_model(Path(record["artifact"]), embedding_model_id=base.model_id,
                                 codebook_version=codebook.version)
        encoder = model_encoder(Path(record["artifact"]), card, base, settings.embed_batch_size)
        # a gold-tuned encoder's ONNX copies live with the model version it belongs to, and go when it goes
        copies_dir = Path(record["artifact"]) if encoder is not base else None
        return ActiveCoder(coder, record["coder_id"], inference_encoder(settings, encoder, codebook, copies_dir))
    except (ModelMismatchError, OSError) as exc:
        log.warning("the active model cannot be used (%s); coding with the zero-shot coder", exc)
        return None


def model_encoder(folder: Path, card: dict, base, batch_size: int):
    """The encoder a trained model reads: its own gold-tuned one, checked against its card, or ``base``."""
    encoder = card.get("encoder")
    if not encoder:
        return base
    embedder = load_embedder(str((folder / encoder["folder"]).resolve()), batch_size)
    if embedder.model_id != card["embedding_model_id"]:
        raise ModelMismatchError(f"the encoder in {folder / encoder['folder']} is not the one model {card['version']} "
                                 f"was trained with (weights changed); run 'qcode train' again")
    return embedder


def code_passages(settings: Settings, run_id: str) -> dict:
    """Code every active passage not yet coded by the current coder and codebook version."""
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        coder, coder_id, embedder = active_coder(settings, store, codebook)
        pending = store.uncoded_passages(coder_id, codebook.version)
        applied = 0
        for start in range(0, len(pending), EMBED_CHUNK):
            batch = pending[start:start + EMBED_CHUNK]
            vectors, _ = embed_with_cache([text for _, text in batch], embedder, store)
            scores, uncoded = coder.score_codes(vectors)
            applied += store.save_codings(
                coder_id=coder_id, codebook_version=codebook.version, run_id=run_id,
                passage_ids=[pid for pid, _ in batch], code_ids=list(coder.classes_),
                scores=scores, applied=coder.apply_thresholds(scores, uncoded), floor=settings.score_floor)
    return {"coder_id": coder_id, "codebook_version": codebook.version, "coded": len(pending), "applied": applied}


def load_coded_passages(store: Store, *, council: str | None = None) -> list[CodedPassage]:
    """Active passages (of one council, matched case- and punctuation-blind, if given) with the active coder's
    scores and codes, and reviewers' gold where there is any."""
    coder_id, codebook_version, _ = store.active_coder()
    if council is not None:
        names = [c for c in store.council_names() if c.lower() == council.lower() or slugify(c) == slugify(council)]
        return _coded_passages_of(store, coder_id, codebook_version, names)
    return _coded_passages_of(store, coder_id, codebook_version, None)


def councils_passages(store: Store, councils: list[str]) -> list[CodedPassage]:
    """The coded passages of these councils, named exactly as stored."""
    coder_id, codebook_version, _ = store.active_coder()
    return _coded_passages_of(store, coder_id, codebook_version, councils)


def _coded_passages_of(store: Store, coder_id: str, codebook_version: str,
                       councils: list[str] | None) -> list[CodedPassage]:
    scores: dict[str, dict[str, float]] = {}
    applied: dict[str, list[str]] = {}
    for passage_id, code_id, score, is_applied in store.codings_for(coder_id, codebook_version, councils):
        scores.setdefault(passage_id, {})[code_id] = round(float(score), 4)
        if is_applied:
            applied.setdefault(passage_id, []).append(code_id)
    rows = store.active_passages(councils)
    gold = store.gold([p["passage_id"] for p in rows]) if councils is not None else store.gold()
    passages = []
    for p in rows:
        decision = gold.get(p["passage_id"])
        passages.append(CodedPassage(
            passage_id=p["passage_id"], council=p["council"], interview_id=p["interview_id"], text=p["text"],
            respondent_role=p["respondent_role"] or "", round=p["round"] or "", question=p["question"] or "",
            scores=scores.get(p["passage_id"], {}), applied=tuple(applied.get(p["passage_id"], ())),
            gold=decision["codes"] if decision else None, reviewer=decision["reviewer"] if decision else "",
            note=decision["note"] if decision else ""))
    return passages


def counted_passages(store: Store) -> list[CodedPassage]:
    """Every active passage with only what cross-council tables count (council, interview, round, codes):
    no text or scores, so memory stays small however large the round."""
    coder_id, codebook_version, _ = store.active_coder()
    return [CodedPassage(pid, council, interview_id, "", round=round_name or "", applied=tuple(applied),
                         gold=tuple(gold) if gold is not None else None)
            for pid, council, interview_id, round_name, applied, gold in store.passage_codes(coder_id, codebook_version)]


class Evidence(NamedTuple):
    """What explanations point to: the codebook's examples and reviewers' gold passages, with their vectors."""
    texts: list[str]
    codes: list[tuple[str, ...]]
    passage_ids: list[str]
    vectors: object


def explanation_evidence(codebook: Codebook, embedder, store: Store) -> Evidence:
    """Every codebook example and every active gold passage (any council's), embedded once."""
    evidence = [(example, (code.id,), "") for code in codebook.codes for example in code.examples]
    evidence += store.gold_evidence()
    vectors, _ = embed_with_cache([e[0] for e in evidence], embedder, store)
    return Evidence([e[0] for e in evidence], [e[1] for e in evidence], [e[2] for e in evidence], vectors)


def explain_suggestions(passages: list[CodedPassage], codebook: Codebook, embedder, store: Store,
                        top: int = 3, evidence: Evidence | None = None) -> list[CodedPassage]:
    """Fill each passage's ``why``: for its strongest suggestions, the nearest codebook example or gold passage.

    Passages go through in chunks, so memory stays flat however large the corpus; ``evidence`` is
    ``explanation_evidence``'s, computed here when not given.
    """
    evidence = evidence or explanation_evidence(codebook, embedder, store)
    explained = []
    for start in range(0, len(passages), EMBED_CHUNK):
        chunk = passages[start:start + EMBED_CHUNK]
        vectors, _ = embed_with_cache([p.text for p in chunk], embedder, store)
        strongest = [sorted(p.scores, key=p.scores.get, reverse=True)[:top] for p in chunk]
        why = nearest_evidence(vectors, strongest, evidence.vectors, evidence.codes, evidence.texts,
                               evidence_ids=evidence.passage_ids, passage_ids=[p.passage_id for p in chunk])
        explained += [replace(p, why=w) for p, w in zip(chunk, why)]
    return explained


def order_for_review(passages: list[CodedPassage], thresholds: dict[str, float], order: str) -> list[CodedPassage]:
    """Transcript order, or ``uncertainty``: unreviewed passages whose scores sit nearest a threshold first."""
    if order == "transcript":
        return passages
    if order != "uncertainty":
        raise QcodeError(f"unknown review order {order!r}; use 'transcript' or 'uncertainty'")

    def distance(p: CodedPassage) -> tuple[int, float]:
        gaps = [abs(score - thresholds[c]) for c, score in p.scores.items() if c in thresholds]
        return (p.gold is not None, min(gaps) if gaps else float("inf"))

    return sorted(passages, key=distance)


def review_export_recorder(store: Store):
    """Records each review file's export (id and what every row showed), the baseline its import is diffed against."""
    def record(export: ReviewExport) -> None:
        store.record_review_export(export.export_id, export.council,
                                   {pid: (row.codes, row.note, row.reviewed) for pid, row in export.rows.items()})
    return record


def write_round_reports(settings: Settings, run_id: str) -> list[ExportResult]:
    """Per-council summary and review CSVs and pages, the cross-council matrix and index, gold outranking the model.

    One council at a time, so memory does not grow with the round. A council
    whose content (passages, metadata, codings, gold; and the coder, codebook
    and review decisions shared by all) is as when its files were last written
    here, and whose files are still there, is left alone: one new interview
    rewrites its own council's files and the cross-council ones.
    """
    out_dir = Path(settings.out_dir)
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        coder_id, codebook_version, _ = store.active_coder()
        state_key = f"reports:{out_dir.resolve()}"
        shared = [codebook.version, HTML_LAYOUT, coder_id, store.last_decision_id()]
        sizes, fingerprints = {}, {}
        for council, (size, fingerprint) in store.council_fingerprints(coder_id, codebook_version).items():
            sizes[council], fingerprints[council] = size, _digest([shared, fingerprint])
        round_state = _digest(sorted(fingerprints.items()))
        last = store.get_state(state_key) or {}
        if last.get("round") == round_state and all(Path(p).exists() for p in last["files"]):
            return [ExportResult(Path(p), sha, UNCHANGED) for p, sha in last["files"].items()]

        def remember(path: Path, sha: str) -> None:
            store.record_export(path, sha, run_id)

        facts, written = round_facts(store, codebook), store.wrote_content
        councils: dict[str, dict] = {}
        results: list[ExportResult] = []
        stale = []
        for council, fingerprint in fingerprints.items():
            before = last.get("councils", {}).get(council)
            if before and before["fingerprint"] == fingerprint and all(Path(p).exists() for p in before["files"]):
                councils[council] = before
                results += [ExportResult(Path(p), sha, UNCHANGED) for p, sha in before["files"].items()]
            else:
                stale.append(council)
        if stale:
            embedder = active_encoder(settings, store, codebook)
            evidence = explanation_evidence(codebook, embedder, store)
            reviewer_codes = store.reviewer_codes()
            with tqdm(total=len(stale), desc="reports", unit="council", disable=None) as bar:
                for batch in _batches(stale, sizes, EMBED_CHUNK):  # a few thousand passages in memory at a time
                    passages = explain_suggestions(councils_passages(store, batch), codebook, embedder, store,
                                                   evidence=evidence)
                    for council, council_passages in by_council(passages).items():
                        files = write_council_reports(out_dir, council, council_passages, codebook, written, remember,
                                                      review_export_recorder(store))
                        files.append(write_council_page(out_dir, council, council_passages, codebook, facts,
                                                        reviewer_codes, written, remember))
                        councils[council] = {"fingerprint": fingerprints[council],
                                             "files": {str(r.path): r.sha256 for r in files}}
                        results += files
                    bar.update(len(batch))
        counted = counted_passages(store)
        results += [write_councils_by_code(out_dir, counted, codebook, written, remember),
                    write_index_page(out_dir, counted, codebook, facts, written, remember)]
        store.set_state(state_key, {"round": round_state, "councils": councils,
                                    "files": {str(r.path): r.sha256 for r in results}})
    if last.get("files"):
        remove_stale_reports(last["files"], {str(r.path) for r in results})
    return results


def write_html_report(settings: Settings) -> list[ExportResult]:
    """reports/index.html and a report.html per council from the database as it is (``qcode report``)."""
    out_dir = Path(settings.out_dir)
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        facts, reviewer_codes = round_facts(store, codebook), store.reviewer_codes()

        def remember(path: Path, sha: str) -> None:
            store.record_export(path, sha, "report")

        counted = counted_passages(store)
        results = [write_index_page(out_dir, counted, codebook, facts, store.wrote_content, remember)]
        for council in tqdm(store.council_names(), desc="pages", unit="council", disable=None):
            results.append(write_council_page(out_dir, council, councils_passages(store, [council]), codebook,
                                              facts, reviewer_codes, store.wrote_content, remember))
    return results


def _batches(councils: list[str], sizes: dict[str, int], limit: int):
    """Consecutive groups of councils holding at most ``limit`` passages (a larger council goes alone)."""
    batch, total = [], 0
    for council in councils:
        if batch and total + sizes[council] > limit:
            yield batch
            batch, total = [], 0
        batch.append(council)
        total += sizes[council]
    if batch:
        yield batch


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def remove_stale_reports(previous: dict[str, str], current: set[str]) -> None:
    """Delete the reports of a council that has no active passages left (its files were retired).

    ``previous`` maps the files the last report run wrote to their sha256;
    a file in a folder this run did not write to belongs to such a council.

    Only a file still exactly as qcode wrote it goes; one a reviewer edited is
    left where it is, with a warning.
    """
    current_folders = {Path(name).parent for name in current}
    for name, sha in previous.items():
        path = Path(name)
        if path.parent in current_folders or not path.exists():
            continue
        if sha256_file(path) != sha:
            log.warning("%s has no active passages left but was edited after qcode wrote it, so it is kept", path)
            continue
        path.unlink()
        if path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()


def finish_run(settings: Settings, run_id: str, status: str, report: dict) -> Path:
    with Store(settings.db_path) as store:
        store.finish_run(run_id, status, report)
    return write_run_report(Path(settings.out_dir), report)


def ingest_report_dict(report: IngestReport) -> dict:
    data = asdict(report)
    data["redaction_total"] = report.redaction_total
    return data


# Nightly reruns and distributed work ----------------------------------------------------------


def pending_embeddings(settings: Settings) -> tuple[tuple, str, list[tuple[str, str]]]:
    """(how to load the encoder, its model id, [(text hash, text)] still to embed); reads only, so workers
    elsewhere can do the encoding."""
    with Store(settings.db_path) as store:
        embedder = active_encoder(settings, store, open_codebook(settings, store))
        spec = (embedder.model_name, embedder.batch_size, embedder.backend, embedder.onnx_folder)
        return spec, embedder.model_id, store.texts_without_embedding(embedder.model_id)


def encode_texts(encoder_spec: tuple, texts: list[str]):
    """Embed a batch anywhere (a Dask worker loads the model once per process); no database access."""
    return load_embedder(*encoder_spec).encode(texts)


def active_passage_count(settings: Settings) -> int:
    with Store(settings.db_path) as store:
        return store.count_active_passages()


def store_embeddings(settings: Settings, model_id: str, hashes: list[str], vectors) -> int:
    with Store(settings.db_path) as store:
        store.save_embeddings(model_id, hashes, vectors)
    return len(hashes)


def prepare_coding(settings: Settings) -> dict:
    """The coder and the passages it still has to code, with their cached vectors, for batch scoring."""
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        coder, coder_id, embedder = active_coder(settings, store, codebook)
        pending = store.uncoded_passages(coder_id, codebook.version)
        vectors, _ = embed_with_cache([text for _, text in pending], embedder, store)
    return {"coder": coder, "coder_id": coder_id, "codebook_version": codebook.version,
            "passage_ids": [pid for pid, _ in pending], "vectors": vectors}


def score_batch(coder, vectors) -> tuple:
    """Scores and applied codes for a batch of vectors; pure, so it runs on any worker."""
    scores, extra = coder.score_codes(vectors)
    return scores, coder.apply_thresholds(scores, extra)


def store_codings(settings: Settings, *, coder_id: str, codebook_version: str, run_id: str, passage_ids, code_ids,
                  scores, applied) -> int:
    with Store(settings.db_path) as store:
        return store.save_codings(coder_id=coder_id, codebook_version=codebook_version, run_id=run_id,
                                  passage_ids=passage_ids, code_ids=code_ids, scores=scores, applied=applied,
                                  floor=settings.score_floor)
