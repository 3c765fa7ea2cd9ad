"""The steps of a run, in order, as plain functions over settings and the database.

Stages (ingest, anonymise, segment, embed, classify, summarise, report) are
pure; these steps wire them and keep I/O at their edges, so tests call them
directly and ``flows/`` wraps each one as a Prefect task. Every step opens the
database for its own work and closes it, keeping to DuckDB's one-writer rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import Counter
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.base import clone
from tqdm import tqdm

from pipeline import themes as themes_module
from pipeline.agreement import agreement_figures
from pipeline.anonymise import Anonymiser
from pipeline.classify import TrainedCoder, ZeroShotCoder, codebook_training_set, fit_zero_shot_coder, nearest_evidence
from pipeline.codebook import load_codebook
from pipeline.config import Settings
from pipeline.embed import embed_with_cache, load_embedder
from pipeline.errors import QcodeError, ReviewFileError, TranscriptError, explain_system_error
from pipeline.evaluate import read_labelled_csv
from pipeline.exchange import import_qdpx
from pipeline.gold import ImportResult, import_review, reconcile_gold
from pipeline.html_report import LAYOUT_VERSION as HTML_LAYOUT, write_round_html
from pipeline.ingest import (META_FIELDS, body_findings, file_key, list_transcript_files, personal_data_reason,
                             read_known_names, read_round, record_unexpected_failure, round_gate, round_key, round_warnings,
                             split_turns)
from pipeline.report import UNCHANGED, ExportResult, write_analysis_tables, write_reports, write_review_files, write_run_report
from pipeline.review import ReviewExport, parse_review_csv
from pipeline.schemas import Codebook, CodedPassage, IngestReport, Quarantined, SegmentedTranscript, Transcript, slugify
from pipeline.segment import segment_turns
from pipeline.spreadsheet import sha256_file
from pipeline.store import Store
from pipeline.tune import TuningParams, build_tuned_encoder, encoder_folder
from pipeline.tune import usable as tuned_encoder_usable
from pipeline.train import (ModelMismatchError, TrainingSet, cv_metrics, gold_folds, gold_hash, held_out_evaluation,
                            labelled_training_set, load_model, model_card, model_version, not_worse, save_model,
                            training_set)

log = logging.getLogger("qcode.steps")

EMBED_CHUNK = 2048


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
    recognised by hash and skipped; a file that cannot be used is quarantined
    with its reason and the others go on, whatever the failure, unless the
    machine itself fails (a full disk, say), which stops the run. Files are
    reported by their gated labels. A file is one interview, known by its path
    in the round folder: when its metadata moves it to another council or
    interview id, or the file is gone from the folder, the interview it held is
    retired (kept, with its reviewers' decisions, but out of the reports).
    """
    round_dir = Path(round_dir)
    known_names = read_known_names(round_dir)
    gate = Anonymiser(known_names)
    error_log = ingest_log(settings, run_id)
    transcripts, quarantined = read_round(round_dir, gate, error_log)
    gate = round_gate(gate, transcripts=transcripts)  # council names in the bodies are not people's names
    fingerprint = processing_fingerprint(settings, known_names)
    report = IngestReport(files_seen=len(transcripts) + len(quarantined), quarantined=list(quarantined),
                          warnings=round_warnings(round_dir, gate))
    for warning in report.warnings:
        log.warning("%s", warning)
    for q in quarantined:
        log.warning("quarantined %s: %s", q.source, q.reason)
    embedder = None
    with Store(settings.db_path) as store:
        for transcript in tqdm(transcripts, desc="ingest", unit="file", disable=None):
            if transcript.dropped_keys:
                warning = (f"{transcript.source}: front-matter key(s) {', '.join(transcript.dropped_keys)} are not "
                           f"metadata qcode knows, so their values were dropped; known keys: {', '.join(META_FIELDS)}")
                report.warnings.append(warning)
                log.warning("%s", warning)
            source_key = hashlib.sha256(f"{transcript.source_hash}:{fingerprint}".encode()).hexdigest()[:32]
            current = store.current_transcript(transcript.meta.key)
            if current and current[2] == source_key:
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
        present = [file_key(path.name) for path in list_transcript_files(round_dir)]
        report.retired = store.retire_missing_files(round_key(round_dir), present)
    for label in report.retired:
        log.warning("retired %s: it is no longer in the round folder, so its interview leaves the reports "
                    "(reviewers' decisions on it are kept)", label)
    return report


def _quarantine(report: IngestReport, transcript: Transcript, reason: str) -> None:
    report.quarantined.append(Quarantined(transcript.source, reason, transcript.file_key))
    log.warning("quarantined %s: %s", transcript.source, reason)


def embed_passages(settings: Settings) -> dict:
    """Embed the active passages whose text has no cached embedding yet, in chunks; returns counts."""
    embedder = coding_encoder(settings)
    with Store(settings.db_path) as store:
        missing = store.texts_without_embedding(embedder.model_id)
        for start in tqdm(range(0, len(missing), EMBED_CHUNK), desc="embed", unit="chunk", disable=None):
            chunk = missing[start:start + EMBED_CHUNK]
            store.save_embeddings(embedder.model_id, [h for h, _ in chunk], embedder.encode([t for _, t in chunk]))
        passages = store.count_active_passages()
    return {"passages": passages, "embedded": len(missing), "cache_hits": passages - len(missing),
            "model_id": embedder.model_id}


def coding_encoder(settings: Settings, codebook: Codebook | None = None):
    """The encoder that embeds passages for coding: the base model tuned on this codebook, or the base itself.

    The tuned encoder is built on first use for a codebook version (80 s on
    2 cores, with a progress bar in a terminal) and reused from
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
        log.warning("tuning the encoder on codebook %s (once per codebook version; about 80 s on 2 cores)",
                    codebook.version)
        with tqdm(desc="tune encoder", unit="batch", disable=None) as bar:
            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            folder = build_tuned_encoder(base.model, base.model_id, codebook, settings.tuned_encoders_dir, params,
                                         advance)
    return load_embedder(str(folder.resolve()), settings.embed_batch_size)


def open_codebook(settings: Settings, store: Store) -> Codebook:
    """Load the codebook, register its version and move gold off any ids it retired."""
    codebook = load_codebook(settings.codebook_path)
    reconcile_gold(store, codebook, settings.codebook_path)
    store.register_codebook(codebook)
    return codebook


def current_coder(store: Store, codebook: Codebook, embedder) -> tuple:
    """The active trained model if it fits this codebook and embedding model, else the zero-shot coder."""
    record = store.active_coder_record()
    if record and record["kind"] == "trained":
        try:
            coder, _ = load_model(Path(record["artifact"]), embedding_model_id=embedder.model_id,
                                  codebook_version=codebook.version)
            return coder, record["coder_id"]
        except (ModelMismatchError, OSError) as exc:
            log.warning("the active model cannot be used (%s); coding with the zero-shot coder", exc)
    coder, coder_id = fit_zero_shot_coder(codebook, embedder, store)
    store.register_coder(coder_id, "zero-shot", embedder.model_id, codebook.version,
                         dict(zip(coder.classes_, map(float, coder.thresholds_))))
    return coder, coder_id


def code_passages(settings: Settings, run_id: str) -> dict:
    """Code every active passage not yet coded by the current coder and codebook version."""
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        embedder = coding_encoder(settings, codebook)
        coder, coder_id = current_coder(store, codebook, embedder)
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
    """Active passages with the active coder's scores and codes, and reviewers' gold where there is any."""
    coder_id, codebook_version, _ = store.active_coder()
    scores: dict[str, dict[str, float]] = {}
    applied: dict[str, list[str]] = {}
    for passage_id, code_id, score, is_applied in store.codings_for(coder_id, codebook_version):
        scores.setdefault(passage_id, {})[code_id] = round(float(score), 4)
        if is_applied:
            applied.setdefault(passage_id, []).append(code_id)
    gold = store.gold()
    passages = []
    for p in store.active_passages():
        if council is not None and p["council"].lower() != council.lower() and slugify(p["council"]) != slugify(council):
            continue
        decision = gold.get(p["passage_id"])
        passages.append(CodedPassage(
            passage_id=p["passage_id"], council=p["council"], interview_id=p["interview_id"], text=p["text"],
            respondent_role=p["respondent_role"] or "", round=p["round"] or "", question=p["question"] or "",
            scores=scores.get(p["passage_id"], {}), applied=tuple(applied.get(p["passage_id"], ())),
            gold=decision["codes"] if decision else None, reviewer=decision["reviewer"] if decision else "",
            note=decision["note"] if decision else ""))
    return passages


def explain_suggestions(passages: list[CodedPassage], codebook: Codebook, embedder, store: Store,
                        top: int = 3) -> list[CodedPassage]:
    """Fill each passage's ``why``: for its strongest suggestions, the nearest codebook example or gold passage.

    Passages go through in chunks, so memory stays flat however large the corpus.
    """
    examples = [(example, (code.id,), "") for code in codebook.codes for example in code.examples]
    gold = [(p.text, p.gold, p.passage_id) for p in passages if p.gold]
    evidence = examples + gold
    evidence_vectors, _ = embed_with_cache([e[0] for e in evidence], embedder, store)
    explained = []
    for start in range(0, len(passages), EMBED_CHUNK):
        chunk = passages[start:start + EMBED_CHUNK]
        vectors, _ = embed_with_cache([p.text for p in chunk], embedder, store)
        strongest = [sorted(p.scores, key=p.scores.get, reverse=True)[:top] for p in chunk]
        why = nearest_evidence(vectors, strongest, evidence_vectors, [e[1] for e in evidence], [e[0] for e in evidence],
                               evidence_ids=[e[2] for e in evidence], passage_ids=[p.passage_id for p in chunk])
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


def write_round_reports(settings: Settings, run_id: str) -> list[ExportResult]:
    """Per-council summary and review CSVs, the cross-council matrix and the HTML pages, gold outranking the model.

    When nothing the reports show has changed since they were last written to
    this folder (and they are still there), nothing is recomputed or rewritten.
    """
    out_dir = Path(settings.out_dir)
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        state_key = f"reports:{out_dir.resolve()}"
        state = {"content": store.content_state(), "codebook": codebook.version, "pages": HTML_LAYOUT}
        last = store.get_state(state_key)
        if last and last["state"] == state and all(Path(p).exists() for p in last["files"]):
            return [ExportResult(Path(p), sha, UNCHANGED) for p, sha in last["files"].items()]
        embedder = coding_encoder(settings, codebook)
        passages = explain_suggestions(load_coded_passages(store), codebook, embedder, store)
        results = write_reports(out_dir, passages, codebook, store.wrote_content,
                                remember=lambda path, sha: store.record_export(path, sha, run_id),
                                record_export=review_export_recorder(store))
        results += write_round_html(out_dir, store, codebook, passages, store.wrote_content,
                                    remember=lambda path, sha: store.record_export(path, sha, run_id))
        store.set_state(state_key, {"state": state, "files": {str(r.path): r.sha256 for r in results}})
    if last:
        remove_stale_reports(last["files"], {str(r.path) for r in results})
    return results


def write_html_report(settings: Settings) -> list[ExportResult]:
    """reports/index.html and a report.html per council from the database as it is (``qcode report``)."""
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        return write_round_html(Path(settings.out_dir), store, codebook, load_coded_passages(store),
                                store.wrote_content, remember=lambda path, sha: store.record_export(path, sha, "report"))


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


def export_reviews(settings: Settings, *, council: str | None = None, order: str = "transcript") -> list[ExportResult]:
    """review.csv for one council or all, in transcript or uncertainty order."""
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        embedder = coding_encoder(settings, codebook)
        _, _, thresholds = store.active_coder()
        passages = load_coded_passages(store, council=council)
        if council is not None and not passages:
            known = sorted({p["council"] for p in store.active_passages()})
            raise QcodeError(f"no passages for council {council!r}; councils in the database: {', '.join(known)}")
        passages = order_for_review(explain_suggestions(passages, codebook, embedder, store), thresholds, order)
        results = write_review_files(Path(settings.out_dir), passages, codebook, store.wrote_content,
                                     remember=lambda path, sha: store.record_export(path, sha, "review-export"),
                                     record_export=review_export_recorder(store))
    return results


def review_export_recorder(store: Store):
    """Records each review file's export (id and what every row showed), the baseline its import is diffed against."""
    def record(export: ReviewExport) -> None:
        store.record_review_export(export.export_id, export.council,
                                   {pid: (row.codes, row.note, row.reviewed) for pid, row in export.rows.items()})
    return record


def review_note_gate(store: Store) -> Anonymiser:
    """The anonymisation gate for reviewers' notes, with the known names of every round this database was run on.

    A review import has no round folder of its own; the rounds recorded in
    ``runs`` still name where each round's known_names.txt is. A round folder
    that has gone, or a names file that cannot be read, leaves the gate with
    what it catches without names: titled names, e-mail addresses, phone numbers.
    """
    names: list[str] = []
    for round_dir in store.round_dirs():
        try:
            names += read_known_names(Path(round_dir))
        except (QcodeError, OSError):
            log.warning("the known names of round %s could not be read; notes are checked without them", round_dir)
    return Anonymiser(sorted(set(names)))


def import_review_files(settings: Settings, paths: list[Path], *, reviewer: str | None = None,
                        after_each=None) -> list[tuple[Path, ImportResult | ReviewFileError]]:
    """Apply each file (review CSV or .qdpx) in its own transaction; a bad file is rejected whole, the others apply."""
    outcomes = []
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        coder_id, codebook_version, _ = store.active_coder()
        gate = review_note_gate(store)
        for path in paths:
            try:
                if Path(path).suffix.lower() == ".qdpx":  # corrected in NVivo, ATLAS.ti, MAXQDA or QualCoder
                    outcomes.append((path, import_qdpx(store, Path(path).read_bytes(), str(path), codebook,
                                                       active_coder=(coder_id, codebook_version),
                                                       redact_note=gate.redact, fallback_reviewer=reviewer,
                                                       after_each=after_each)))
                    continue
                review = parse_review_csv(Path(path).read_bytes(), str(path), codebook.ids)
                outcomes.append((path, import_review(store, review, codebook, reviewer=reviewer,
                                                     active_coder=(coder_id, codebook_version), after_each=after_each,
                                                     redact_note=gate.redact)))
            except ReviewFileError as exc:
                outcomes.append((path, exc))
            except OSError as exc:
                outcomes.append((path, ReviewFileError(str(path), [f"cannot be read ({exc.strerror})"])))
    return outcomes


def finish_run(settings: Settings, run_id: str, status: str, report: dict) -> Path:
    with Store(settings.db_path) as store:
        store.finish_run(run_id, status, report)
    return write_run_report(Path(settings.out_dir), report)


def ingest_report_dict(report: IngestReport) -> dict:
    data = asdict(report)
    data["redaction_total"] = report.redaction_total
    return data


def agreement_report(settings: Settings, *, council: str | None = None) -> dict:
    """Model vs reviewers on reviewed passages, and reviewer vs reviewer where passages were double coded."""
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        passages = load_coded_passages(store, council=council)
        reviewer_codes = store.reviewer_codes()
    return agreement_figures(passages, reviewer_codes, codebook.ids, council)


def export_matrix(settings: Settings) -> list[ExportResult]:
    """passages_by_code.csv (0/1 per code) and quotes.csv (one row per passage and code), gold where it exists."""
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        passages = load_coded_passages(store)
        results = write_analysis_tables(Path(settings.out_dir), passages, codebook, store.wrote_content)
        for result in results:
            store.record_export(result.path, result.sha256, "export-matrix")
    return results


def gold_training_set(store: Store, codebook: Codebook, embedder) -> TrainingSet:
    gold = store.gold_passages()
    if not gold:
        raise QcodeError("no reviewed passages yet; import reviewers' CSVs with 'qcode review import' first")
    texts, _ = codebook_training_set(codebook)
    example_vectors, _ = embed_with_cache(texts, embedder, store)
    gold_vectors, _ = embed_with_cache([g["text"] for g in gold], embedder, store)
    return training_set(codebook, example_vectors, gold_vectors, [tuple(g["codes"]) for g in gold],
                        [g["transcript_key"] for g in gold], [g["passage_id"] for g in gold])


def train_model(settings: Settings, *, force: bool = False, run_id: str | None = None, **params) -> dict:
    """Train on gold, compare with the active coder on the same folds, promote if not worse, then recode.

    ``params`` override TrainedCoder's defaults (e.g. ``C``, ``evidence_scale``).
    """
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        embedder = coding_encoder(settings, codebook)
        data = gold_training_set(store, codebook, embedder)
        folds = gold_folds(data)
        active, active_id = current_coder(store, codebook, embedder)
        candidate = TrainedCoder(**{"min_positives": settings.min_gold_per_code, **params})
        candidate_cv = cv_metrics(candidate, data, folds)
        active_cv = cv_metrics(active if isinstance(active, ZeroShotCoder) else clone(active), data, folds)
        promoted = force or not_worse(candidate_cv, active_cv)
        coder = candidate.fit(data.X, data.Y, code_ids=data.code_ids, is_gold=data.is_gold, groups=data.groups,
                              sample_weight=data.sample_weight)
        version = model_version(data)
        card = model_card(version=version, coder=coder, data=data, embedding_model_id=embedder.model_id,
                          codebook_version=codebook.version, candidate=candidate_cv, active=active_cv,
                          active_id=active_id, promoted=promoted, forced=force, min_positives=settings.min_gold_per_code)
        card["cross_validation"]["folds"] = len(folds)
        folder = save_model(settings.models_dir, version, coder, card)
        store.register_coder(f"trained:{version}", "trained", embedder.model_id, codebook.version, card["thresholds"],
                             artifact=str(folder.resolve()), activate=promoted)
        store.set_state("trained_gold", data.data_hash)
    result = {"version": version, "folder": str(folder), "promoted": promoted, "verdict": card["verdict"],
              "fallback_codes": card["zero_shot_fallback_codes"], "gold_passages": card["gold_passages"]}
    if promoted:
        run_id = run_id or new_run_id()
        result["recode"] = code_passages(settings, run_id)
        write_round_reports(settings, run_id)
    return result


def evaluate_model(settings: Settings, *, labelled: Path | None = None, train_file: Path | None = None,
                   split: str = "interview", folds: int = 5) -> dict:
    """Held-out figures for zero-shot vs trained coders, with a learning curve.

    Data: ``train_file`` to train on and ``labelled`` to test on; or
    ``labelled`` alone, split by ``split``; or the database's gold, split by
    interview or council.
    """
    if split not in ("interview", "council"):
        raise QcodeError(f"unknown split {split!r}; use 'interview' or 'council'")
    if train_file is not None and labelled is None:
        raise QcodeError("--train needs --labelled: the file to test on")
    codebook = load_codebook(settings.codebook_path)
    embedder = coding_encoder(settings, codebook)
    with Store(settings.db_path) as store:
        texts, _ = codebook_training_set(codebook)
        example_vectors, _ = embed_with_cache(texts, embedder, store)
        if labelled is None:
            gold = store.gold_passages()
            if not gold:
                raise QcodeError("no reviewed passages yet; import reviewers' CSVs or pass --labelled FILE")
            vectors, _ = embed_with_cache([g["text"] for g in gold], embedder, store)
            codes = [tuple(g["codes"]) for g in gold]
            groups = [g["transcript_key"] if split == "interview" else g["council"] for g in gold]
            test_rows = None
        else:
            rows = read_labelled_csv(labelled, codebook.ids)
            train_rows = read_labelled_csv(train_file, codebook.ids) if train_file else []
            everything = train_rows + rows
            vectors, _ = embed_with_cache([r.text for r in everything], embedder, store)
            codes = [r.codes for r in everything]
            groups = [(("train:" if i < len(train_rows) else "test:") + (r.interview if split == "interview" else r.council)
                       or f"row{i}") for i, r in enumerate(everything)]
            test_rows = np.arange(len(train_rows), len(everything)) if train_file else None
    data = labelled_training_set(codebook, example_vectors, vectors, codes, groups)
    if test_rows is None:
        fold_list = gold_folds(data, folds)
    else:
        gold_rows = np.flatnonzero(data.is_gold)
        held = gold_rows[test_rows]
        fold_list = [(np.setdiff1d(np.arange(len(data.X)), held), held)]
    result = held_out_evaluation(data, fold_list, min_positives=settings.min_gold_per_code)
    result.update(split=split, source=str(labelled) if labelled else "database gold",
                  trained_on=str(train_file) if train_file else "the other folds")
    return result


def emerging_themes(settings: Settings, *, clusters: int | None = None) -> dict:
    """Cluster substantive passages that no code fits (no applied code, no reviewer code)."""
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        embedder = coding_encoder(settings, codebook)
        zero_shot, _ = fit_zero_shot_coder(codebook, embedder, store)
        passages = [p for p in load_coded_passages(store)
                    if not p.codes and len(p.text.split()) >= themes_module.MIN_WORDS]
        vectors, _ = embed_with_cache([p.text for p in passages], embedder, store)
    if passages:
        # Passages nearer the uncoded examples than any code are small talk and procedure, not themes.
        scores, uncoded = zero_shot.score_codes(vectors)
        substantive = uncoded < scores.max(axis=1)
        passages = [p for p, keep in zip(passages, substantive) if keep]
        vectors = vectors[substantive]
    found = themes_module.cluster_themes([p.text for p in passages], vectors, [p.council for p in passages],
                                         clusters=clusters, code_centroids=zero_shot.centroids_,
                                         code_ids=list(zero_shot.classes_))
    return {"candidates": len(passages), "themes": found}


# Nightly reruns and distributed work ----------------------------------------------------------

def import_inbox(settings: Settings, inbox: Path) -> dict:
    """Import every review CSV dropped in ``inbox``; move each to done/ or rejected/ (with its error report)."""
    inbox = Path(inbox)
    files = sorted(p for p in inbox.glob("*.csv") if p.is_file()) if inbox.is_dir() else []
    summary = {"files": len(files), "applied": 0, "rejected": [], "stale_rows": 0}
    if not files:
        return summary
    for path, outcome in import_review_files(settings, files):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        if isinstance(outcome, ReviewFileError):
            target = _free_name(inbox / "rejected" / path.name, stamp)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
            target.with_name(target.name + ".errors.txt").write_text(str(outcome) + "\n", encoding="utf-8")
            summary["rejected"].append(path.name)
        else:
            target = _free_name(inbox / "done" / path.name, stamp)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
            summary["applied"] += outcome.applied
            summary["stale_rows"] += len(outcome.stale_rows)
    return summary


def _free_name(path: Path, stamp: str) -> Path:
    return path if not path.exists() else path.with_name(f"{path.stem}-{stamp}{path.suffix}")


def gold_state(settings: Settings) -> str | None:
    """A hash of the gold and codebook version: training is only worth repeating when it changes."""
    with Store(settings.db_path) as store:
        gold = store.gold()
    if not gold:
        return None
    codebook = load_codebook(settings.codebook_path)
    return gold_hash(codebook.version, list(gold), [g["codes"] for g in gold.values()])


def train_if_new_gold(settings: Settings, run_id: str) -> dict:
    """Retrain when the gold changed since the last training; not enough gold is a note, not a failure."""
    current = gold_state(settings)
    with Store(settings.db_path) as store:
        last = store.get_state("trained_gold")
    if current is None or current == last:
        return {"trained": False, "reason": "no new gold since the last training" if current else "no gold yet"}
    try:
        result = train_model(settings, run_id=run_id)
    except QcodeError as exc:
        return {"trained": False, "reason": str(exc)}
    return {"trained": True, **{k: result[k] for k in ("version", "promoted", "verdict")}}


def pending_embeddings(settings: Settings) -> tuple[str, str, list[tuple[str, str]]]:
    """(encoder to load, its model id, [(text hash, text)] still to embed); reads only, so workers elsewhere
    can do the encoding."""
    embedder = coding_encoder(settings)
    with Store(settings.db_path) as store:
        return embedder.model_name, embedder.model_id, store.texts_without_embedding(embedder.model_id)


def encode_texts(model_name: str, batch_size: int, texts: list[str]):
    """Embed a batch anywhere (a Dask worker loads the model once per process); no database access."""
    return load_embedder(model_name, batch_size).encode(texts)


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
        embedder = coding_encoder(settings, codebook)
        coder, coder_id = current_coder(store, codebook, embedder)
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
