"""Write per-council summaries, review CSVs and the cross-council matrix to files.

A review CSV may be open on a reviewer's desk: if it changed since qcode wrote
it, it is left exactly as it is and the fresh export goes beside it as
``review-new.csv``, so a rerun never overwrites a reviewer's work.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.review import REVIEW_COLUMNS, ReviewExport, review_export, review_rows
from pipeline.schemas import Codebook, CodedPassage, slugify
from pipeline.spreadsheet import excel_csv_bytes, sha256_bytes, sha256_file, write_atomically
from pipeline.summarise import SUMMARY_COLUMNS, council_summary, councils_by_code

log = logging.getLogger("qcode.report")

WRITTEN, UNCHANGED, KEPT_EDITED = "written", "unchanged", "kept-edited"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sha256: str
    status: str


WrittenByQcode = Callable[[str], bool]
"""Answers whether qcode ever wrote a file with the given sha256 (anything else was edited by someone)."""

RememberExport = Callable[[Path, str], None]
"""Records that qcode is writing ``path`` with the given sha256; called before the file is replaced, so a run
killed mid-write never leaves a file of qcode's own that the next run mistakes for a reviewer's edit."""


def write_export(path: Path, data: bytes, written_by_qcode: WrittenByQcode, *, protect_edits: bool = False,
                 remember: RememberExport | None = None) -> ExportResult:
    """Write ``data`` unless the file already holds it; with ``protect_edits``, never replace a file someone edited."""
    new_hash = sha256_bytes(data)
    if path.exists():
        current = sha256_file(path)
        if current == new_hash:
            return ExportResult(path, new_hash, UNCHANGED)
        if protect_edits and not written_by_qcode(current):
            beside = path.with_name(f"{path.stem}-new{path.suffix}")
            if remember:
                remember(beside, new_hash)
            write_atomically(beside, data)
            log.warning("%s was edited after qcode wrote it and is left as it is; the fresh export is %s",
                        path, beside.name)
            return ExportResult(beside, new_hash, KEPT_EDITED)
    if remember:
        remember(path, new_hash)
    write_atomically(path, data)
    return ExportResult(path, new_hash, WRITTEN)


def by_council(passages: list[CodedPassage]) -> dict[str, list[CodedPassage]]:
    """Passages grouped by council, councils in name order."""
    grouped: dict[str, list[CodedPassage]] = defaultdict(list)
    for p in passages:
        grouped[p.council].append(p)
    return dict(sorted(grouped.items()))


RecordExport = Callable[[ReviewExport], None]
"""Keeps a review file's export record (its id and what each row showed) before the file is written."""


def write_review_files(out_dir: Path, passages: list[CodedPassage], codebook: Codebook,
                       written_by_qcode: WrittenByQcode, remember: RememberExport | None = None,
                       record_export: RecordExport | None = None) -> list[ExportResult]:
    """review.csv per council, rows in the order given, each row carrying the file's export id.

    An edited review.csv is never replaced. The export is recorded before its
    file is written, so no file ever carries an id the database does not know.
    """
    results = []
    for council, council_passages in by_council(passages).items():
        export = review_export(council, council_passages)
        if record_export:
            record_export(export)
        path = out_dir / slugify(council) / "review.csv"
        rows = review_rows(council_passages, codebook, export.export_id)
        results.append(write_export(path, excel_csv_bytes(REVIEW_COLUMNS, rows), written_by_qcode, protect_edits=True,
                                    remember=remember))
    return results


def write_reports(out_dir: Path, passages: list[CodedPassage], codebook: Codebook,
                  written_by_qcode: WrittenByQcode, remember: RememberExport | None = None,
                  record_export: RecordExport | None = None) -> list[ExportResult]:
    """summary.csv and review.csv per council, and councils_by_code.csv across councils."""
    results = []
    for council, council_passages in by_council(passages).items():
        results += write_council_reports(out_dir, council, council_passages, codebook, written_by_qcode, remember,
                                         record_export)
    results.append(write_councils_by_code(out_dir, passages, codebook, written_by_qcode, remember))
    return results


def write_council_reports(out_dir: Path, council: str, passages: list[CodedPassage], codebook: Codebook,
                          written_by_qcode: WrittenByQcode, remember: RememberExport | None = None,
                          record_export: RecordExport | None = None) -> list[ExportResult]:
    """One council's summary.csv and review.csv."""
    path = out_dir / slugify(council) / "summary.csv"
    summary = council_summary(passages, codebook)
    rows = ([r[c] for c in SUMMARY_COLUMNS] for r in summary)
    results = [write_export(path, excel_csv_bytes(SUMMARY_COLUMNS, rows), written_by_qcode, remember=remember)]
    return results + write_review_files(out_dir, passages, codebook, written_by_qcode, remember, record_export)


def write_councils_by_code(out_dir: Path, passages: list[CodedPassage], codebook: Codebook,
                           written_by_qcode: WrittenByQcode, remember: RememberExport | None = None) -> ExportResult:
    """councils_by_code.csv: counts only, so ``passages`` need no text or scores."""
    header, rows = councils_by_code(passages, codebook)
    return write_export(out_dir / "councils_by_code.csv", excel_csv_bytes(header, rows), written_by_qcode,
                        remember=remember)


MATRIX_META = ("passage_id", "council", "interview_id", "respondent_role", "round", "source")
QUOTE_COLUMNS = ("passage_id", "council", "interview_id", "respondent_role", "round", "code_id", "code_label",
                 "family", "framework_area", "source", "text")


def write_analysis_tables(out_dir: Path, passages: list[CodedPassage], codebook: Codebook,
                          written_by_qcode: WrittenByQcode) -> list[ExportResult]:
    """A 0/1 passages-by-codes table and a quote-level table, for analysis in R, SPSS, NVivo or Excel."""
    def source(p: CodedPassage) -> str:
        return f"reviewer {p.reviewer}" if p.gold is not None else "model"

    matrix_rows = ([p.passage_id, p.council, p.interview_id, p.respondent_role, p.round, source(p),
                    *(int(c in p.codes) for c in codebook.ids)] for p in passages)
    quote_rows = ([p.passage_id, p.council, p.interview_id, p.respondent_role, p.round, code.id, code.label,
                   code.family, code.framework_area, source(p), p.text]
                  for p in passages for code in codebook.codes if code.id in p.codes)
    return [
        write_export(out_dir / "passages_by_code.csv", excel_csv_bytes((*MATRIX_META, *codebook.ids), matrix_rows),
                     written_by_qcode),
        write_export(out_dir / "quotes.csv", excel_csv_bytes(QUOTE_COLUMNS, quote_rows),
                     written_by_qcode),
    ]


def write_agreement_tables(out_dir: Path, report: dict, codebook: Codebook) -> list[Path]:
    """model_vs_reviewers.csv, reviewer_pairs.csv and disagreements.csv under ``out_dir``."""
    columns = ("code_id", "label", "support", "support_other", "precision", "recall", "f1", "kappa", "alpha",
               "alpha_reading")
    labels = {c.id: c.label for c in codebook.codes}

    def rows(stats: dict, prefix: list) -> list[list]:
        table = [[*prefix, *(_fmt(r.get(c, labels.get(r["code_id"], ""))) for c in columns)] for r in stats["per_code"]]
        table.append([*prefix, "micro F1", "", "", "", "", "", _fmt(stats["micro_f1"]), "", "", ""])
        table.append([*prefix, "macro F1", "", "", "", "", "", _fmt(stats["macro_f1"]), "", "", ""])
        return table

    written = []
    if report["model_vs_reviewers"]:
        path = out_dir / "model_vs_reviewers.csv"
        write_atomically(path, excel_csv_bytes(columns, rows(report["model_vs_reviewers"], [])))
        written.append(path)
    if report["reviewer_pairs"]:
        path = out_dir / "reviewer_pairs.csv"
        table = [row for pair in report["reviewer_pairs"] for row in rows(pair, [pair["reviewer_a"], pair["reviewer_b"]])]
        write_atomically(path, excel_csv_bytes(("reviewer_a", "reviewer_b", *columns), table))
        written.append(path)
        path = out_dir / "disagreements.csv"
        keys = ("passage_id", "council", "interview_id", "text", "codes_a", "codes_b")
        table = [[pair["reviewer_a"], pair["reviewer_b"], *(d[k] for k in keys)]
                 for pair in report["reviewer_pairs"] for d in pair["disagreements"]]
        write_atomically(path, excel_csv_bytes(("reviewer_a", "reviewer_b", *keys), table))
        written.append(path)
    return written


def write_evaluation_tables(out_dir: Path, result: dict, codebook: Codebook) -> list[Path]:
    """learning_curve.csv (zero-shot, then each training fraction) and per_code.csv (zero-shot vs all gold)."""
    curve = out_dir / "learning_curve.csv"
    measures = ("top1_accuracy", "top3_recall", "micro_f1", "macro_f1")
    rows = [["zero-shot", "0", "", *(_fmt(result["zero_shot"][m]) for m in measures)]]
    rows += [["trained", str(p["fraction"]), _fmt(p["gold_positives_per_code"]), *(_fmt(p[m]) for m in measures)]
             for p in result["learning_curve"]]
    write_atomically(curve, excel_csv_bytes(("coder", "gold_fraction", "gold_positives_per_code", *measures), rows))
    per_code = out_dir / "per_code.csv"
    trained = result["learning_curve"][-1]["per_code"]
    zero = result["zero_shot"]["per_code"]
    table = [[c.id, c.label, zero[c.id]["support"], _fmt(zero[c.id]["precision"]), _fmt(zero[c.id]["recall"]),
              _fmt(zero[c.id]["f1"]), _fmt(trained[c.id]["precision"]), _fmt(trained[c.id]["recall"]),
              _fmt(trained[c.id]["f1"])] for c in codebook.codes]
    write_atomically(per_code, excel_csv_bytes(("code_id", "label", "support", "zero_shot_precision", "zero_shot_recall",
                                                "zero_shot_f1", "trained_precision", "trained_recall", "trained_f1"), table))
    return [curve, per_code]


def write_themes_table(out_dir: Path, themes: list[dict]) -> Path:
    path = out_dir / "themes.csv"
    columns = ("theme", "size", "councils", "key_terms", "nearest_code", "nearest_code_similarity")
    rows = [[*(t[c] if t[c] is not None else "" for c in columns), *t["typical_passages"]] for t in themes]
    width = max((len(t["typical_passages"]) for t in themes), default=0)
    write_atomically(path, excel_csv_bytes((*columns, *(f"typical_passage_{i + 1}" for i in range(width))), rows))
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.3f}"
    return str(value)


def write_run_report(out_dir: Path, report: dict) -> Path:
    """The run's account of every file (counts and reasons, never personal data) as JSON."""
    path = out_dir / "run-report.json"
    write_atomically(path, json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8"))
    return path
