"""The review workflow: review CSVs out and in (and .qdpx in), the inbox, agreement and the analysis matrix.

Plain functions over ``pipeline/`` stages, I/O at the edges, as in ``pipeline/steps.py`` (the run workflow).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from pipeline.agreement import agreement_figures
from pipeline.anonymise import Anonymiser
from pipeline.config import Settings
from pipeline.errors import QcodeError, ReviewFileError
from pipeline.exchange import import_qdpx
from pipeline.gold import ImportResult, import_review
from pipeline.ingest import read_known_names
from pipeline.report import ExportResult, write_analysis_tables, write_review_files
from pipeline.review import parse_review_csv
from pipeline.steps import (active_encoder, explain_suggestions, load_coded_passages, open_codebook, order_for_review,
                            review_export_recorder)
from pipeline.store import Store

log = logging.getLogger("qcode.review")


def export_reviews(settings: Settings, *, council: str | None = None, order: str = "transcript") -> list[ExportResult]:
    """review.csv for one council or all, in transcript or uncertainty order."""
    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        embedder = active_encoder(settings, store, codebook)
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
