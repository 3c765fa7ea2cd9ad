"""The ``qcode-nightly`` flow and its deployment: bring every configured round up to date.

Per run: import the review CSVs dropped in the inbox, ingest new and changed
files of every round folder, embed what is new, retrain when there is new
gold, code what is uncoded, and rewrite the reports whose content changed.
A failure in one round does not stop the others; the final state names what
failed. The whole run holds the database's writer lock.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.schedules import Cron
from prefect.states import Failed

from flows import tasks
from flows.run_round import StageClock, publish_counts
from pipeline import steps
from pipeline.config import NightlyConfig, load_config
from pipeline.lock import writer_lock

DEPLOYMENT_NAME = "qcode-nightly"


@flow(name="qcode-nightly", log_prints=False)
def nightly(config_path: str):
    """One nightly rerun over the configuration in ``config_path`` (qcode.toml)."""
    config = load_config(config_path)
    settings = config.settings
    run_id = steps.new_run_id()
    clock = StageClock()
    report: dict = {"run_id": run_id, "round_dir": ", ".join(str(r) for r in config.rounds), "status": "failed",
                    "rounds": {}, "failures": []}
    with writer_lock(settings.db_path, wait_seconds=config.lock_wait_seconds, purpose="qcode nightly"):
        tasks.begin_run(settings, "nightly", run_id)
        try:
            _stage(report, "reviews", clock, tasks.import_inbox, settings, config.inbox)
            totals = {"files_seen": 0, "new": [], "changed": [], "unchanged": [], "quarantined": [], "redactions": {},
                      "warnings": []}
            for round_dir in config.rounds:
                ingest = _stage(report, f"ingest {round_dir.name}", clock, tasks.ingest_round, round_dir, settings, run_id)
                if ingest is not None:
                    counts = steps.ingest_report_dict(ingest)
                    report["rounds"][str(round_dir)] = counts
                    for key in ("new", "changed", "unchanged", "quarantined", "warnings"):
                        totals[key] += counts[key]
                    totals["files_seen"] += counts["files_seen"]
                    totals["redactions"].update(counts["redactions"])
            report["ingest"] = totals
            _stage(report, "embed", clock, _embed(config), settings)
            if config.retrain:
                _stage(report, "train", clock, tasks.train_if_new_gold, settings, run_id)
            _stage(report, "code", clock, _code(config), settings, run_id)
            exports = _stage(report, "report", clock, tasks.write_round_reports, settings, run_id)
            if exports is not None:
                report["exports"] = [{"path": str(e.path), "status": e.status} for e in exports]
            report["status"] = "completed" if not report["failures"] else "completed with failures"
        finally:
            report["seconds"] = clock.total()
            tasks.finish_run(settings, run_id, report["status"], report)
    publish_counts(report)
    if report["failures"]:
        return Failed(message="; ".join(report["failures"]), data=report)
    return report


def _stage(report: dict, name: str, clock: StageClock, task, *args):
    """Run one stage; a failure is recorded and the run goes on with the next stage."""
    try:
        result = clock(name, task, *args)
    except Exception as exc:  # noqa: BLE001 - every failure is reported in the final state
        report["failures"].append(f"{name}: {exc}")
        return None
    if name in ("reviews", "embed", "train", "code"):
        report[name] = result
    return result


def _embed(config: NightlyConfig):
    return tasks.embed_on_workers if config.dask_address else tasks.embed_passages


def _code(config: NightlyConfig):
    return tasks.code_on_workers if config.dask_address else tasks.code_passages


def task_runner_for(address: str | None):
    """A DaskTaskRunner on the cluster at ``address``; None keeps Prefect's default runner."""
    if not address:
        return None
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def local_timezone() -> str:
    """The machine's time zone name, so '0 2 * * *' means 02:00 where the team is."""
    try:
        from tzlocal import get_localzone_name

        return get_localzone_name() or "UTC"
    except Exception:  # noqa: BLE001 - an unknown zone falls back to UTC rather than failing the deployment
        return "UTC"


def nightly_deployment(config_path: Path | str, config: NightlyConfig | None = None):
    """The qcode-nightly deployment with its cron schedule, ready for ``serve``."""
    config = config or load_config(config_path)
    runner = task_runner_for(config.dask_address)
    target = nightly.with_options(task_runner=runner) if runner else nightly
    return target.to_deployment(
        name=DEPLOYMENT_NAME, schedule=Cron(config.schedule, timezone=config.timezone or local_timezone()),
        parameters={"config_path": str(Path(config_path).resolve())},
        description="Nightly rerun: reviews from the inbox, new and changed interviews, retraining, recoding, reports.",
    )
