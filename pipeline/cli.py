"""The ``qcode`` command: parse options, build settings, call a flow or library function, print one line.

Domain errors become a one-line message and exit code 1; nothing here holds logic.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pipeline.config import ANONYMISATION_POLICIES, Settings
from pipeline.errors import QcodeError


def _quiet_prefect() -> None:
    # Offline by design, and a researcher's terminal shows qcode's progress, not Prefect's chatter.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


class QcodeGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except QcodeError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=QcodeGroup)
@click.version_option(package_name="qcode")
def main() -> None:
    """qcode: first-pass coding of council leadership interviews against a codebook.

    \b
    Example:
        qcode run transcripts_sample/
    """


def _settings(**options) -> Settings:
    return Settings.load(**options)


@main.command()
@click.argument("round_dir", type=click.Path(path_type=Path))
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="DuckDB file [default: data/qcode.duckdb]")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Reports folder [default: reports/]")
@click.option("--model", "model_name", help="sentence-transformers model name or folder [default: bundled all-MiniLM-L6-v2]")
@click.option("--codebook", "codebook_path", type=click.Path(path_type=Path), help="Codebook YAML")
@click.option("--anonymisation", "anonymisation_policy", type=click.Choice(ANONYMISATION_POLICIES),
              help="redact personal data found (default) or reject the file")
def run(round_dir: Path, **options) -> None:
    """Code every transcript in ROUND_DIR and write per-council reports.

    Runs the qcode-run Prefect flow: ingest, anonymisation gate, passages,
    embeddings, zero-shot coding, then summary.csv and review.csv per council.

    \b
    Example:
        qcode run transcripts_sample/ --db data/qcode.duckdb --out reports/
    """
    settings = _settings(**options)
    if not round_dir.is_dir():
        raise QcodeError(f"{round_dir} is not a folder; pass the folder that holds the round's transcripts")
    _quiet_prefect()
    from flows.run_round import run_round

    report = run_round(str(round_dir), settings)
    ingest = report["ingest"]
    for item in ingest["quarantined"]:
        click.echo(f"quarantined {item['source']}: {item['reason']}", err=True)
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
    click.echo(f"codebook {book.name} version {book.version}: {len(book.codes)} codes ({counts}), "
               f"{examples} examples, {len(book.uncoded_examples)} uncoded examples")
