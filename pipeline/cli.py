"""The ``qcode`` command: parse options, build settings, call a flow or library function, print one line.

Domain errors become a one-line message and exit code 1; nothing here holds logic.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import click

from pipeline.config import ANONYMISATION_POLICIES, BACKENDS, Settings
from pipeline.errors import QcodeError, explain_system_error


def _quiet_prefect() -> None:
    # Offline by design, and a researcher's terminal shows qcode's progress, not Prefect's chatter.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _connect_prefect(settings: Settings, quiet: bool = True) -> None:
    """Before a flow: the user's Prefect server, or a local one started with a generous wait.

    ``quiet`` sends Prefect's console messages to logs/prefect.log beside the database.
    """
    if quiet:
        _quiet_prefect()
    else:
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.prefect_server import connect, send_logs_to

    if quiet:
        send_logs_to(settings.db_path.parent / "logs" / "prefect.log")
    connect(lambda line: click.echo(line, err=True))


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas before torch allocates: encoding a round in chunks otherwise grows the heap with
    the round (measured on 400 synthetic interviews: embedding peak 1,455 MB by default, 1,216 MB with 2 arenas,
    same speed). Does nothing where glibc is not the C library."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _import_libraries_in_background():
    """Import torch, sentence-transformers and spaCy while Prefect's server starts: about 5 s that the flow
    would otherwise spend importing. Nothing is loaded; a library that fails to import fails again, with its
    error, where the flow needs it."""
    import threading

    def work() -> None:
        try:
            import sentence_transformers  # noqa: F401
            import spacy  # noqa: F401
        except Exception:  # noqa: BLE001 - reported where it is used
            pass

    thread = threading.Thread(target=work, name="qcode-imports", daemon=True)
    thread.start()
    return thread


class QcodeGroup(click.Group):
    """Every failure ends in one line on the terminal and exit code 1; a traceback goes to a log file."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except QcodeError as exc:
            log = _write_error_log(ctx, exc.detail) if exc.detail else None
            _fail(f"{exc}" + (f" (details in {log})" if log else ""))
        except Exception as exc:  # noqa: BLE001 - anything else: one line, the whole error in a log file
            log = _write_error_log(ctx, traceback.format_exc())
            explained = explain_system_error(exc) or f"qcode stopped on an unexpected error ({type(exc).__name__})"
            _fail(f"{explained}. The full error is in {log}" if log else
                  f"{explained}. (The full error could not be written to a log file either.)")


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def _write_error_log(ctx: click.Context, text: str) -> Path | None:
    """The whole error in ``logs/`` beside the database the command used (or the temp folder); its path."""
    settings = ctx.meta.get("qcode.settings")
    if settings is None:
        try:
            settings = Settings.load()
        except QcodeError:
            settings = Settings()
    name = f"error-{datetime.now().strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    header = f"qcode {' '.join(sys.argv[1:])}\n{datetime.now().isoformat(timespec='seconds')}\n\n"
    for folder in (settings.db_path.parent / "logs", Path(tempfile.gettempdir()) / "qcode-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(header + text, encoding="utf-8")
            return folder / name
        except OSError:
            continue
    return None


@click.group(cls=QcodeGroup)
@click.version_option(package_name="qcode")
def main() -> None:
    """qcode: first-pass coding of council leadership interviews against a codebook.

    \b
    Example:
        qcode run transcripts_sample/
    """


def _settings(**options) -> Settings:
    return _remember(Settings.load(**options))


def _remember(settings: Settings) -> Settings:
    """The command's settings, kept so an error log goes beside the database it used."""
    click.get_current_context().meta["qcode.settings"] = settings
    return settings


@contextmanager
def _locked(settings: Settings, purpose: str, wait: float = 0.0):
    """Hold the database's lock for the whole command, and find a damaged database before any work starts."""
    from pipeline.lock import writer_lock
    from pipeline.store import Store

    with writer_lock(settings.db_path, wait_seconds=wait, purpose=purpose):
        if Path(settings.db_path).exists():
            with Store(settings.db_path, read_only=True) as store:
                store.check_readable()
        yield


WAIT_OPTION = click.option("--wait", type=click.FloatRange(min=0), default=0, show_default=True,
                           help="Seconds to wait for another qcode command using the same database")


@main.command()
@click.argument("round_dir", type=click.Path(path_type=Path))
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Reports folder [default: reports/]")
@click.option("--model", "model_name", help="mpnet, minilm, or a sentence-transformers model name or folder [default: mpnet, bundled all-mpnet-base-v2]")
@click.option("--backend", type=click.Choice(BACKENDS),
              help="auto (default): the fastest ONNX Runtime copy of the encoder (int8, then fp32) that agrees with torch; "
                   "onnx (fp32); onnx-int8; torch")
@click.option("--codebook", "codebook_path", type=click.Path(path_type=Path), help="Codebook YAML")
@click.option("--anonymisation", "anonymisation_policy", type=click.Choice(ANONYMISATION_POLICIES),
              help="redact personal data found (default) or reject the file")
@click.option("--dask", "dask_address", help="Run encoding and scoring on the Dask cluster at this address")
@WAIT_OPTION
def run(round_dir: Path, dask_address: str | None, wait: float, **options) -> None:
    """Code every transcript in ROUND_DIR and write per-council reports.

    Runs the qcode-run Prefect flow: ingest, anonymisation gate, passages,
    embeddings, zero-shot coding, then summary.csv and review.csv per council.

    \b
    Example:
        qcode run transcripts_sample/ --db data/qcode.duckdb --out reports/
    """
    settings = _settings(**options)
    from pipeline.ingest import TRANSCRIPT_SUFFIXES, list_transcript_files

    if not round_dir.is_dir():
        raise QcodeError(f"{round_dir} is not a folder; pass the folder that holds the round's transcripts")
    if not list_transcript_files(round_dir):
        raise QcodeError(f"{round_dir} holds no transcripts; qcode reads {', '.join(sorted(TRANSCRIPT_SUFFIXES))} "
                         "files directly in the round folder (not in sub-folders)")
    settings.prepare_folders()
    _limit_malloc_arenas()
    with _locked(settings, f"qcode run {round_dir}", wait):  # before the server starts: a busy database fails fast
        imports = _import_libraries_in_background()
        _connect_prefect(settings)
        imports.join()
        from flows.nightly import task_runner_for
        from flows.run_round import run_round

        runner = task_runner_for(dask_address)
        flow = run_round.with_options(task_runner=runner) if runner else run_round
        report = flow(str(round_dir), settings, distributed=bool(runner))
    ingest = report["ingest"]
    for item in ingest["quarantined"]:
        click.echo(f"quarantined {item['source']}: {item['reason']}", err=True)
    for label in ingest["retired"]:
        click.echo(f"retired {label}: no longer in the round folder, so its interview left the reports", err=True)
    for warning in ingest["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    for export in report["exports"]:
        if export["status"] == "kept-edited":
            click.echo(f"kept an edited review file; fresh export written to {export['path']}", err=True)
    processed = len(ingest["new"]) + len(ingest["changed"]) + len(ingest["unchanged"])
    click.echo(
        f"{processed} files ({len(ingest['new'])} new, {len(ingest['changed'])} changed, "
        f"{len(ingest['unchanged'])} unchanged), {len(ingest['quarantined'])} quarantined, "
        f"{ingest['redaction_total']} redactions, {report['embed']['passages']} passages "
        f"({report['embed']['embedded']} embedded), {report['code']['applied']} codings applied, "
        f"{report['seconds']['total']:.1f} s; reports in {settings.out_dir}/"
    )


@main.command()
@click.option("--codebook", "codebook_path", type=click.Path(path_type=Path), help="Codebook YAML")
def codebook(**options) -> None:
    """Check the codebook and print its version.

    \b
    Example:
        qcode codebook --codebook codebook/leadership-innovation.yaml
    """
    from pipeline.codebook import load_codebook

    settings = _settings(**options)
    book = load_codebook(settings.codebook_path)
    families = {}
    for code in book.codes:
        families[code.family] = families.get(code.family, 0) + 1
    counts = ", ".join(f"{n} {family}" for family, n in families.items())
    examples = sum(len(c.examples) for c in book.codes)
    restatements = sum(len(c.restatements) for c in book.codes)
    click.echo(f"codebook {book.name} version {book.version}: {len(book.codes)} codes ({counts}), "
               f"{examples} examples, {restatements} restatements, {len(book.uncoded_examples)} uncoded examples")


@main.group()
def review() -> None:
    """Export review CSVs for reviewers and import their corrections as gold.

    \b
    Example:
        qcode review export --council Westmarch --order uncertainty
    """


@review.command("export")
@click.option("--council", help="Only this council (name or folder name) [default: all]")
@click.option("--order", type=click.Choice(["transcript", "uncertainty"]), default="transcript", show_default=True,
              help="uncertainty: passages whose scores sit nearest a threshold come first")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Reports folder [default: reports/]")
def review_export(council: str | None, order: str, **options) -> None:
    """Write review.csv per council, with reviewed passages showing the reviewer's codes.

    A review.csv edited since qcode wrote it is left untouched; the fresh
    export goes to review-new.csv beside it.

    \b
    Example:
        qcode review export --council Westmarch --order uncertainty
    """
    from pipeline.review_steps import export_reviews

    settings = _settings(**options)
    with _locked(settings, "qcode review export"):
        results = export_reviews(settings, council=council, order=order)
    for result in results:
        if result.status == "kept-edited":
            click.echo(f"kept an edited review file; fresh export written to {result.path}", err=True)
    written = sum(r.status != "unchanged" for r in results)
    click.echo(f"{len(results)} review files ({written} written, {len(results) - written} unchanged), "
               f"{order} order, in {settings.out_dir}/")


@review.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--reviewer", help="Who made these corrections (used where a row's reviewer cell is empty or changed)")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
def review_import(files: tuple[Path, ...], reviewer: str | None, **options) -> None:
    """Import reviewers' corrected review CSVs, or a .qdpx project coded in another tool, as gold codings.

    Each file is applied whole in one transaction or rejected whole with every
    problem listed; importing the same file again changes nothing. In a .qdpx,
    every user who is not a qcode coder is a reviewer (--reviewer names codings
    whose user has no name).

    \b
    Example:
        qcode review import reports/westmarch/review.csv --reviewer "A. Reviewer"
        qcode review import corrected.qdpx
    """
    from pipeline.errors import ReviewFileError
    from pipeline.review_steps import import_review_files

    settings = _settings(**options)
    with _locked(settings, "qcode review import"):
        outcomes = import_review_files(settings, list(files), reviewer=reviewer)
    applied = rejected = 0
    for path, outcome in outcomes:
        if isinstance(outcome, ReviewFileError):
            rejected += 1
            click.echo(f"Error: {outcome}", err=True)
            continue
        applied += outcome.applied
        for warning in outcome.warnings:
            click.echo(f"warning: {path}: {warning}", err=True)
        stale = ""
        if outcome.stale_rows:
            stale = (f", {len(outcome.stale_rows)} stale rows skipped (their passages changed since export: rows "
                     f"{', '.join(map(str, outcome.stale_rows))})")
        remapped = (f", {outcome.remapped_codings} codings mapped to the passages they overlap"
                    if outcome.remapped_codings else "")
        click.echo(f"{path}: {outcome.applied} decisions applied, {outcome.unchanged} unchanged, "
                   f"{outcome.unreviewed} rows not reviewed{stale}{remapped}")
    click.echo(f"{len(outcomes)} files, {rejected} rejected, {applied} decisions applied")
    if rejected:
        sys.exit(1)


@main.command()
@click.option("--council", help="Only this council [default: all]")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Folder for the CSVs [default: reports/agreement/]")
@WAIT_OPTION
def agreement(council: str | None, db_path: Path | None, out_dir: Path | None, wait: float) -> None:
    """Agreement between the model and reviewers, and between reviewers who double coded.

    Per code: precision, recall, F1, Cohen's kappa and Krippendorff's alpha
    (>= 0.8 reliable, >= 0.667 tentative); micro and macro F1 overall; a
    disagreement list for consensus meetings.

    \b
    Example:
        qcode agreement --council Westmarch --out reports/agreement/
    """
    from pipeline.codebook import load_codebook
    from pipeline.report import write_agreement_tables
    from pipeline.review_steps import agreement_report

    settings = _settings(db_path=db_path)
    with _locked(settings, "qcode agreement", wait):
        report = agreement_report(settings, council=council)
    if not report["reviewed_passages"]:
        raise QcodeError("no reviewed passages yet; import reviewers' CSVs with 'qcode review import' first")
    folder = out_dir or settings.out_dir / "agreement"
    if report["model_vs_reviewers"]:
        _echo_agreement(f"Model vs reviewers ({report['reviewed_passages']} reviewed passages)", report["model_vs_reviewers"])
    for pair in report["reviewer_pairs"]:
        _echo_agreement(f"{pair['reviewer_a']} vs {pair['reviewer_b']} ({pair['passages']} passages coded by both, "
                        f"{len(pair['disagreements'])} disagreements)", pair)
    written = write_agreement_tables(folder, report, load_codebook(settings.codebook_path))
    pairs = len(report["reviewer_pairs"])
    micro = report["model_vs_reviewers"]["micro_f1"]
    click.echo(f"{report['reviewed_passages']} reviewed passages, model micro F1 {micro:.3f}, "
               f"{pairs} reviewer pairs; {len(written)} CSV files in {folder}/")


def _echo_agreement(title: str, stats: dict) -> None:
    click.echo(f"{title}: micro F1 {stats['micro_f1']:.3f}, macro F1 {stats['macro_f1']:.3f}")
    click.echo(f"  {'code':<6}{'ref':>5}{'other':>7}{'P':>7}{'R':>7}{'F1':>7}{'kappa':>8}{'alpha':>8}  reading")
    for r in stats["per_code"]:
        if not (r["support"] or r["support_other"]):
            continue
        cells = [f"{r[k]:.2f}" if r[k] == r[k] else "n/a" for k in ("precision", "recall", "f1", "kappa", "alpha")]
        click.echo(f"  {r['code_id']:<6}{r['support']:>5}{r['support_other']:>7}{cells[0]:>7}{cells[1]:>7}"
                   f"{cells[2]:>7}{cells[3]:>8}{cells[4]:>8}  {r['alpha_reading']}")


@main.group()
def export() -> None:
    """Analysis exports of the coded passages.

    \b
    Example:
        qcode export matrix --out reports/
    """


@export.command("matrix")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Folder [default: reports/]")
def export_matrix_command(**options) -> None:
    """A 0/1 passages-by-codes table and a quote-level table (gold where it exists).

    \b
    Example:
        qcode export matrix --out reports/
    """
    from pipeline.review_steps import export_matrix

    settings = _settings(**options)
    with _locked(settings, "qcode export matrix"):
        results = export_matrix(settings)
    click.echo(f"wrote {', '.join(str(r.path) for r in results)}")


@export.command("qdpx")
@click.option("--council", help="Only this council (name or folder name) [default: all]")
@click.option("--out", "out_file", type=click.Path(path_type=Path, dir_okay=False),
              help="The .qdpx file [default: reports/qcode.qdpx, or reports/qcode-COUNCIL.qdpx]")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
def export_qdpx_command(council: str | None, out_file: Path | None, **options) -> None:
    """A REFI-QDA project for NVivo, ATLAS.ti, MAXQDA or QualCoder: codebook, interviews, every coding and coder.

    \b
    Example:
        qcode export qdpx --council Westmarch --out westmarch.qdpx
    """
    from pipeline.exchange import export_qdpx

    settings = _settings(**options)
    with _locked(settings, "qcode export qdpx"):
        export = export_qdpx(settings, council=council, out=out_file)
    click.echo(f"{export.result.path}: {export.sources} interviews, {export.codes} codes, {export.codings} codings "
               f"({export.result.status})")


@export.command("qdc")
@click.option("--out", "out_file", type=click.Path(path_type=Path, dir_okay=False),
              help="The .qdc file [default: reports/codebook-NAME.qdc]")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
def export_qdc_command(out_file: Path | None, **options) -> None:
    """The codebook alone as a REFI-QDA codebook (.qdc), framework areas as parent codes.

    \b
    Example:
        qcode export qdc --out codebook.qdc
    """
    from pipeline.exchange import export_qdc

    settings = _settings(**options)
    with _locked(settings, "qcode export qdc"):
        result, codes = export_qdc(settings, out=out_file)
    click.echo(f"{result.path}: {codes} codes ({result.status})")


@main.command()
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Reports folder [default: reports/]")
@WAIT_OPTION
def report(wait: float, **options) -> None:
    """The round as HTML pages: index.html and one report.html per council.

    Self-contained files (charts as inline SVG, nothing fetched from any
    address) that open from disk in any browser; qcode run writes them too.

    \b
    Example:
        qcode report --out reports/
    """
    from pipeline.report import UNCHANGED
    from pipeline.steps import write_html_report

    settings = _settings(**options)
    with _locked(settings, "qcode report", wait):
        results = write_html_report(settings)
    changed = sum(1 for r in results if r.status != UNCHANGED)
    click.echo(f"{len(results)} pages ({changed} written, {len(results) - changed} unchanged); "
               f"open {settings.out_dir / 'index.html'}")


@main.command()
@click.option("--force", is_flag=True, help="Promote the new model even if it scores worse than the active coder")
@click.option("--c", "C", type=click.FloatRange(min=0, min_open=True), help="Logistic regularisation [default: 16]")
@click.option("--evidence-scale", type=click.FloatRange(min=0),
              help="Gold positives at which trained and zero-shot parts weigh equally [default: 5]")
@click.option("--heads-only", is_flag=True,
              help="Train the per-code heads only; keep the encoder as it is (faster, learns less from gold)")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
@click.option("--models", "models_dir", type=click.Path(path_type=Path), help="Model folder [default: models/]")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Reports folder [default: reports/]")
def train(force: bool, C: float | None, evidence_scale: float | None, heads_only: bool, **options) -> None:
    """Train a coder on reviewers' gold and promote it if it is not worse.

    The encoder is tuned on the gold too (once per cross-validation fold, on
    that fold's training gold, then on all of it: about a minute each on 2
    cores). The new model and the active coder are cross-validated on the same
    folds (gold split by interview); the new one becomes active only if neither
    its macro F1 nor its top-1 accuracy is lower, unless --force. Every
    unreviewed passage is then embedded by the new encoder and recoded.

    \b
    Example:
        qcode train --db data/qcode.duckdb
    """
    from pipeline.learn_steps import train_model

    settings = _settings(**options, tune_encoder_on_gold=False if heads_only else None)
    params = {k: v for k, v in {"C": C, "evidence_scale": evidence_scale}.items() if v is not None}
    with _locked(settings, "qcode train"):
        result = train_model(settings, force=force, **params)
    if result["fallback_codes"]:
        click.echo(f"zero-shot fallback (fewer than {settings.min_gold_per_code} gold positives): "
                   f"{', '.join(result['fallback_codes'])}")
    click.echo(f"model card: {Path(result['folder']) / 'card.md'}")
    recode = result.get("recode")
    recoded = f"; recoded {recode['coded']} passages, {recode['applied']} codes applied" if recode else ""
    click.echo(f"model {result['version']} from {result['gold_passages']} reviewed passages {result['verdict']}{recoded}")


@main.command()
@click.option("--labelled", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="CSV with text and codes (and council, interview) to test on [default: the database's gold]")
@click.option("--train", "train_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="CSV to train on; then all of --labelled is held out")
@click.option("--split", type=click.Choice(["interview", "council"]), default="interview", show_default=True,
              help="Hold out whole interviews, or whole councils")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Folder for the CSVs [default: reports/evaluation/]")
@WAIT_OPTION
def evaluate(labelled: Path | None, train_file: Path | None, split: str, db_path: Path | None, out_dir: Path | None,
             wait: float) -> None:
    """Held-out evaluation: zero-shot vs trained coder, per code, with a learning curve.

    \b
    Example:
        qcode evaluate --labelled bench/dev_set.csv --train bench/gold_set.csv
    """
    from pipeline.codebook import load_codebook
    from pipeline.report import write_evaluation_tables
    from pipeline.learn_steps import evaluate_model

    settings = _settings(db_path=db_path)
    with _locked(settings, "qcode evaluate", wait):
        result = evaluate_model(settings, labelled=labelled, train_file=train_file, split=split)
    click.echo(f"held out: {result['held_out_passages']} passages ({result['source']}, split by {result['split']}, "
               f"{result['folds']} fold(s), trained on {result['trained_on']})")
    click.echo(f"  {'coder':<22}{'gold/code':>10}{'top-1':>8}{'top-3':>8}{'micro F1':>10}{'macro F1':>10}")
    rows = [("zero-shot", None, result["zero_shot"])] + [
        (f"trained {int(p['fraction'] * 100)}% of gold", p["gold_positives_per_code"], p) for p in result["learning_curve"]]
    for name, per_code, figures in rows:
        gold = "" if per_code is None else f"{per_code:.1f}"
        click.echo(f"  {name:<22}{gold:>10}{figures['top1_accuracy']:>8.3f}{figures['top3_recall']:>8.3f}"
                   f"{figures['micro_f1']:>10.3f}{figures['macro_f1']:>10.3f}")
    folder = out_dir or settings.out_dir / "evaluation"
    written = write_evaluation_tables(folder, result, load_codebook(settings.codebook_path))
    gain = result["learning_curve"][-1]["macro_f1"] - result["zero_shot"]["macro_f1"]
    click.echo(f"trained coder macro F1 {result['learning_curve'][-1]['macro_f1']:.3f} vs zero-shot "
               f"{result['zero_shot']['macro_f1']:.3f} ({gain:+.3f}); {len(written)} CSV files in {folder}/")


@main.command()
@click.option("--clusters", type=click.IntRange(1, 50), help="Number of themes [default: about sqrt(n/2), at most 10]")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Reports folder [default: reports/]")
@WAIT_OPTION
def themes(clusters: int | None, wait: float, **options) -> None:
    """Candidate new codes: clusters of substantive passages that no code fits.

    Deterministic for a given database (fixed seeds). Writes themes.csv.

    \b
    Example:
        qcode themes --clusters 8
    """
    from pipeline.report import write_themes_table
    from pipeline.learn_steps import emerging_themes

    settings = _settings(**options)
    with _locked(settings, "qcode themes", wait):
        result = emerging_themes(settings, clusters=clusters)
    for theme in result["themes"]:
        click.echo(f"theme {theme['theme']}: {theme['size']} passages from {theme['councils']} councils; "
                   f"key terms: {theme['key_terms']}; nearest code {theme['nearest_code']} "
                   f"({theme['nearest_code_similarity']})")
    path = write_themes_table(settings.out_dir, result["themes"])
    click.echo(f"{len(result['themes'])} themes from {result['candidates']} passages no code fits; see {path}")


CONFIG_OPTION = click.option("--config", "config_path", type=click.Path(path_type=Path), default=Path("qcode.toml"),
                             show_default=True, help="Configuration file")


@main.command()
@CONFIG_OPTION
def nightly(config_path: Path) -> None:
    """Run the nightly rerun once, now: inbox reviews, new interviews, retraining, recoding, reports.

    \b
    Example:
        qcode nightly --config qcode.toml
    """
    from pipeline.config import load_config

    config = load_config(config_path)  # fails here, before Prefect starts, on a bad configuration
    _remember(config.settings).prepare_folders()
    _connect_prefect(config.settings)
    from flows.nightly import nightly as nightly_flow
    from flows.nightly import task_runner_for

    runner = task_runner_for(config.dask_address)
    flow = nightly_flow.with_options(task_runner=runner) if runner else nightly_flow
    state = flow(str(config_path.resolve()), return_state=True)
    report_file = config.settings.out_dir / "run-report.json"  # written by the run, whatever its final state
    report = json.loads(report_file.read_text(encoding="utf-8")) if report_file.exists() else {}
    for failure in report.get("failures", []):
        click.echo(f"failed: {failure}", err=True)
    ingest, reviews = report.get("ingest", {}), report.get("reviews") or {}
    for warning in ingest.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    train = report.get("train") or {}
    click.echo(
        f"nightly {state.name.lower()}: {len(ingest.get('new', []))} new and {len(ingest.get('changed', []))} changed "
        f"files, {len(ingest.get('quarantined', []))} quarantined, {reviews.get('applied', 0)} review decisions "
        f"({len(reviews.get('rejected', []))} files rejected), {(report.get('embed') or {}).get('embedded', 0)} embedded, "
        f"{'trained' if train.get('trained') else 'no training'}, {(report.get('code') or {}).get('coded', 0)} coded, "
        f"{report.get('seconds', {}).get('total', 0):.1f} s")
    if not state.is_completed():
        sys.exit(1)


@main.command()
@CONFIG_OPTION
def serve(config_path: Path) -> None:
    """Serve the qcode-nightly deployment on its cron schedule (default 02:00 local time).

    Runs until stopped (Ctrl-C). Without PREFECT_API_URL, Prefect starts a
    temporary local server for it; with it, the deployment registers with
    that server (see README, "Nightly reruns").

    \b
    Example:
        qcode serve --config qcode.toml
    """
    from pipeline.config import load_config

    config = load_config(config_path)
    _remember(config.settings)
    _connect_prefect(config.settings, quiet=False)  # serving is long-lived: Prefect's own messages about it stay visible
    from prefect import serve as prefect_serve

    from flows.nightly import nightly_deployment

    deployment = nightly_deployment(config_path, config)
    click.echo(f"serving qcode-nightly on '{config.schedule}' for {len(config.rounds)} round folder(s); Ctrl-C stops")
    prefect_serve(deployment)


if __name__ == "__main__":  # python -m pipeline.cli works like the qcode script
    main()
