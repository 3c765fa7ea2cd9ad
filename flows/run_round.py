"""The ``qcode-run`` Prefect flow: one round folder in, codings and reports out."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows import tasks
from pipeline import steps
from pipeline.config import Settings


class StageClock:
    """Seconds per stage, for the run report."""

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[name] = round(time.perf_counter() - t0, 2)

    def total(self) -> dict:
        return {**self.seconds, "total": round(time.perf_counter() - self.started, 2)}


@flow(name="qcode-run", log_prints=False)
def run_round(round_dir: str, settings: Settings | None = None, distributed: bool = False) -> dict:
    """Ingest, anonymise, segment, embed, code and report one round folder; returns the run report.

    With ``distributed``, encoding and scoring are submitted as batch tasks to
    the flow's task runner (e.g. a DaskTaskRunner) while this process stores.
    """
    settings = settings or Settings.load()
    run_id = steps.new_run_id()
    clock = StageClock()
    report: dict = {"run_id": run_id, "round_dir": str(Path(round_dir)), "status": "failed"}
    tasks.begin_run(settings, Path(round_dir), run_id)
    try:
        report["ingest"] = steps.ingest_report_dict(clock("ingest", tasks.ingest_round, Path(round_dir), settings, run_id))
        if distributed:
            report["embed"] = clock("embed", tasks.embed_on_workers, settings)
            report["code"] = clock("code", tasks.code_on_workers, settings, run_id)
        else:
            report["embed"] = clock("embed", tasks.embed_passages, settings)
            report["code"] = clock("code", tasks.code_passages, settings, run_id)
        exports = clock("report", tasks.write_round_reports, settings, run_id)
        report["exports"] = [{"path": str(e.path), "status": e.status} for e in exports]
        report["status"] = "completed"
    finally:
        report["seconds"] = clock.total()
        tasks.finish_run(settings, run_id, report["status"], report)
    publish_counts(report)
    return report


def publish_counts(report: dict) -> None:
    """A Prefect artifact with counts only: never passage text or the personal data found."""
    table = [{"measure": "seconds", "value": report["seconds"]["total"]}]
    for stage, counts in (("ingest", report.get("ingest")), ("embed", report.get("embed")),
                          ("code", report.get("code")), ("reviews", report.get("reviews")),
                          ("train", report.get("train"))):
        for key, value in (counts or {}).items():
            if isinstance(value, bool) or key in ("redactions", "model_id", "coder_id", "codebook_version",
                                                  "verdict", "reason", "version"):
                continue
            count = len(value) if isinstance(value, list) else value
            if isinstance(count, (int, float)):
                table.append({"measure": f"{stage}: {key.replace('_', ' ')}", "value": count})
    create_table_artifact(key="qcode-run-summary", table=table, description=f"qcode run {report['run_id']}")
