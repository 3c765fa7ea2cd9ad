"""The ``qcode-run`` Prefect flow: one round folder in, codings and reports out.

Each task is a thin shim over a step in ``pipeline.steps``; tasks exchange
counts and ids, never passage text, so nothing personal lands in Prefect's
state or artifacts. Tasks run one after another in the flow's process, which
is DuckDB's single writer.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from pipeline import steps
from pipeline.config import Settings

begin_run = task(steps.begin_run, name="begin-run", cache_policy=NO_CACHE)
ingest_round = task(steps.ingest_round, name="ingest", cache_policy=NO_CACHE)
embed_passages = task(steps.embed_passages, name="embed", cache_policy=NO_CACHE, retries=1)
code_passages = task(steps.code_passages, name="code", cache_policy=NO_CACHE, retries=1)
write_round_reports = task(steps.write_round_reports, name="report", cache_policy=NO_CACHE)
finish_run = task(steps.finish_run, name="finish-run", cache_policy=NO_CACHE)


@flow(name="qcode-run", log_prints=False)
def run_round(round_dir: str, settings: Settings | None = None) -> dict:
    """Ingest, anonymise, segment, embed, code and report one round folder; returns the run report."""
    settings = settings or Settings.load()
    run_id = steps.new_run_id()
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    report: dict = {"run_id": run_id, "round_dir": str(Path(round_dir)), "status": "failed"}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        seconds[name] = round(time.perf_counter() - t0, 2)
        return result

    begin_run(settings, Path(round_dir), run_id)
    try:
        ingest = timed("ingest", ingest_round, Path(round_dir), settings, run_id)
        report["ingest"] = steps.ingest_report_dict(ingest)
        report["embed"] = timed("embed", embed_passages, settings)
        report["code"] = timed("code", code_passages, settings, run_id)
        exports = timed("report", write_round_reports, settings, run_id)
        report["exports"] = [{"path": str(e.path), "status": e.status} for e in exports]
        report["status"] = "completed"
    finally:
        report["seconds"] = {**seconds, "total": round(time.perf_counter() - started, 2)}
        finish_run(settings, run_id, report["status"], report)
    _publish_counts(report)
    return report


def _publish_counts(report: dict) -> None:
    """A Prefect artifact with counts only: file names and numbers, never text or the personal data found."""
    ingest = report["ingest"]
    create_table_artifact(
        key="qcode-run-summary",
        table=[
            {"measure": "files seen", "value": ingest["files_seen"]},
            {"measure": "new files", "value": len(ingest["new"])},
            {"measure": "changed files", "value": len(ingest["changed"])},
            {"measure": "unchanged files", "value": len(ingest["unchanged"])},
            {"measure": "quarantined files", "value": len(ingest["quarantined"])},
            {"measure": "redactions", "value": ingest["redaction_total"]},
            {"measure": "passages", "value": report["embed"]["passages"]},
            {"measure": "passages embedded", "value": report["embed"]["embedded"]},
            {"measure": "passages coded", "value": report["code"]["coded"]},
            {"measure": "codes applied", "value": report["code"]["applied"]},
            {"measure": "seconds", "value": report["seconds"]["total"]},
        ],
        description=f"qcode run {report['run_id']}",
    )
