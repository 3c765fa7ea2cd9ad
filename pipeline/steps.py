"""The steps of a run, in order, as plain functions over settings and the database.

Stages (ingest, anonymise, segment, embed, classify, summarise, report) are
pure; these steps wire them and keep I/O at their edges, so tests call them
directly and ``flows/`` wraps each one as a Prefect task. Every step opens the
database for its own work and closes it, keeping to DuckDB's one-writer rule.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.anonymise import Anonymiser
from pipeline.classify import fit_zero_shot_coder
from pipeline.codebook import load_codebook
from pipeline.config import Settings
from pipeline.embed import embed_with_cache, load_embedder
from pipeline.errors import TranscriptError
from pipeline.ingest import read_known_names, read_round, split_turns
from pipeline.report import ExportResult, write_reports, write_run_report
from pipeline.schemas import CodedPassage, IngestReport, Quarantined, SegmentedTranscript
from pipeline.segment import segment_turns
from pipeline.store import Store

log = logging.getLogger("qcode.steps")

EMBED_CHUNK = 2048


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def begin_run(settings: Settings, round_dir: Path, run_id: str) -> None:
    with Store(settings.db_path) as store:
        store.start_run(run_id, str(round_dir))


def ingest_round(round_dir: Path, settings: Settings, run_id: str) -> IngestReport:
    """Read, anonymise, split and segment every file of a round and store what is new or changed.

    A file that cannot be used is quarantined with its reason; the others go on.
    """
    transcripts, quarantined = read_round(Path(round_dir))
    anonymiser = Anonymiser(read_known_names(Path(round_dir)))
    embedder = load_embedder(settings.model_name, settings.embed_batch_size)
    report = IngestReport(files_seen=len(transcripts) + len(quarantined), quarantined=list(quarantined))
    with Store(settings.db_path) as store:
        for transcript in tqdm(transcripts, desc="ingest", unit="file", disable=None):
            try:
                redacted, found = anonymiser.redact(transcript.text)
                if found:
                    report.redactions[transcript.source] = dict(sorted(found.items()))
                if found and settings.anonymisation_policy == "reject":
                    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(found.items()))
                    raise TranscriptError(transcript.source, f"contains personal data ({kinds}); remove it from the file, "
                                          "or run with the 'redact' anonymisation policy")
                clean = replace(transcript, text=redacted)
                turns = split_turns(redacted, settings.interviewer_labels, settings.respondent_labels,
                                    source=transcript.source)
                passages = segment_turns(clean, turns, max_sentences=settings.max_sentences_per_passage,
                                         max_tokens=embedder.max_tokens, count_tokens=embedder.count_tokens)
                if not passages:
                    raise TranscriptError(transcript.source, "has respondent turns but no sentences to code")
                status = store.save_transcript(SegmentedTranscript(clean, tuple(turns), tuple(passages)), run_id)
            except TranscriptError as exc:
                report.quarantined.append(Quarantined(transcript.source, exc.reason))
                log.warning("quarantined %s: %s", transcript.source, exc.reason)
                continue
            getattr(report, status).append(transcript.source)
    return report


def embed_passages(settings: Settings) -> dict:
    """Embed every active passage the cache lacks, in chunks; returns counts."""
    embedder = load_embedder(settings.model_name, settings.embed_batch_size)
    embedded = 0
    with Store(settings.db_path) as store:
        texts = [p["text"] for p in store.active_passages()]
        for start in tqdm(range(0, len(texts), EMBED_CHUNK), desc="embed", unit="chunk", disable=None):
            _, computed = embed_with_cache(texts[start:start + EMBED_CHUNK], embedder, store)
            embedded += computed
    return {"passages": len(texts), "embedded": embedded, "cache_hits": len(texts) - embedded,
            "model_id": embedder.model_id}


def code_passages(settings: Settings, run_id: str) -> dict:
    """Code every active passage not yet coded by the current coder and codebook version."""
    codebook = load_codebook(settings.codebook_path)
    embedder = load_embedder(settings.model_name, settings.embed_batch_size)
    with Store(settings.db_path) as store:
        store.register_codebook(codebook)
        coder, coder_id = fit_zero_shot_coder(codebook, embedder, store)
        done = store.coded_passage_ids(coder_id, codebook.version)
        pending = [p for p in store.active_passages() if p["passage_id"] not in done]
        applied = 0
        for start in range(0, len(pending), EMBED_CHUNK):
            batch = pending[start:start + EMBED_CHUNK]
            vectors, _ = embed_with_cache([p["text"] for p in batch], embedder, store)
            scores, uncoded = coder.score_codes(vectors)
            applied += store.save_codings(
                coder_id=coder_id, codebook_version=codebook.version, run_id=run_id,
                passage_ids=[p["passage_id"] for p in batch], code_ids=list(coder.classes_),
                scores=scores, applied=coder.apply_thresholds(scores, uncoded), floor=settings.score_floor)
    return {"coder_id": coder_id, "codebook_version": codebook.version, "coded": len(pending), "applied": applied}


def load_coded_passages(store: Store, coder_id: str, codebook_version: str) -> list[CodedPassage]:
    scores: dict[str, dict[str, float]] = {}
    applied: dict[str, list[str]] = {}
    for passage_id, code_id, score, is_applied in store.codings_for(coder_id, codebook_version):
        scores.setdefault(passage_id, {})[code_id] = round(float(score), 4)
        if is_applied:
            applied.setdefault(passage_id, []).append(code_id)
    return [
        CodedPassage(passage_id=p["passage_id"], council=p["council"], interview_id=p["interview_id"],
                     text=p["text"], respondent_role=p["respondent_role"] or "", round=p["round"] or "",
                     question=p["question"] or "", scores=scores.get(p["passage_id"], {}),
                     applied=tuple(applied.get(p["passage_id"], ())))
        for p in store.active_passages()
    ]


def write_round_reports(settings: Settings, run_id: str, coder_id: str) -> list[ExportResult]:
    """Per-council summary and review CSVs and the cross-council matrix for everything coded."""
    codebook = load_codebook(settings.codebook_path)
    with Store(settings.db_path) as store:
        passages = load_coded_passages(store, coder_id, codebook.version)
        results = write_reports(Path(settings.out_dir), passages, codebook, store.export_hash)
        for result in results:
            store.record_export(result.path, result.sha256, run_id)
    return results


def finish_run(settings: Settings, run_id: str, status: str, report: dict) -> Path:
    with Store(settings.db_path) as store:
        store.finish_run(run_id, status, report)
    return write_run_report(Path(settings.out_dir), report)


def ingest_report_dict(report: IngestReport) -> dict:
    data = asdict(report)
    data["redaction_total"] = report.redaction_total
    return data


def passage_vectors(settings: Settings, texts: list[str]) -> np.ndarray:
    """Embeddings for arbitrary texts through the cache (evaluation, benchmarks)."""
    embedder = load_embedder(settings.model_name, settings.embed_batch_size)
    with Store(settings.db_path) as store:
        return embed_with_cache(texts, embedder, store)[0]
