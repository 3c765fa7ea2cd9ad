"""Nightly reruns: configuration, the deployment, only-new-work, inbox handling, locks, kills and Dask."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from conftest import SAMPLE_ROUND, query, run_steps
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ConfigError, StoreError
from pipeline.lock import writer_lock


def summary_line(output: str) -> str:
    """The command's one-line summary (Prefect may log around it)."""
    line = [line for line in output.splitlines() if "nightly " in line][-1]
    return line[line.index("nightly "):]


def write_config(folder, body):
    path = folder / "qcode.toml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def test_an_invalid_configuration_fails_at_start_listing_every_problem(tmp_path):
    path = write_config(tmp_path, """
        [qcode]
        database = 3
        anonymisation = "shred"
        [nightly]
        rounds = ["missing-round"]
        schedule = "at two"
        timezone = "Mars/Olympus"
        colour = "blue"
        [extras]
        x = 1
    """)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    for expected in ("unknown section [extras]", "[nightly] unknown key 'colour'", "[qcode] database has the wrong type",
                     "rounds: missing-round is not a folder", "schedule 'at two' is not a cron expression",
                     "timezone 'Mars/Olympus' is not a time zone name", "anonymisation policy 'shred'"):
        assert expected in message
    result = CliRunner().invoke(main, ["nightly", "--config", str(path)])
    assert result.exit_code == 1 and "has problems" in result.output
    missing = CliRunner().invoke(main, ["serve", "--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 1 and "no configuration file at" in missing.output


def test_the_deployment_runs_nightly_at_two_by_default(tmp_path):
    from flows.nightly import nightly_deployment

    (tmp_path / "round").mkdir()
    path = write_config(tmp_path, '[nightly]\nrounds = ["round"]\n')
    deployment = nightly_deployment(path)
    assert deployment.name == "qcode-nightly"
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 2 * * *"
    assert deployment.parameters == {"config_path": str(path.resolve())}

    path = write_config(tmp_path, '[nightly]\nrounds = ["round"]\nschedule = "30 3 * * 1-5"\ntimezone = "Europe/London"\n')
    [schedule] = nightly_deployment(path).schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 3 * * 1-5", "Europe/London")


def test_nightly_runs_do_only_new_work_and_sort_the_inbox(prefect_harness, tmp_path):
    round_dir = tmp_path / "round"
    round_dir.mkdir()
    for name in ("WMC-01.md", "FEN-03.txt", "manifest.csv"):
        shutil.copy(SAMPLE_ROUND / name, round_dir / name)
    path = write_config(tmp_path, '[nightly]\nrounds = ["round"]\n[qcode]\ndatabase = "q.duckdb"\n')
    db = tmp_path / "q.duckdb"
    runner = CliRunner()

    first = runner.invoke(main, ["nightly", "--config", str(path)])
    assert first.exit_code == 0, first.output
    assert summary_line(first.output).startswith("nightly completed: 2 new and 0 changed files")

    review = tmp_path / "reports" / "westmarch" / "review.csv"
    with open(review, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[1]["codes"], rows[1]["reviewer"] = "LA05", "Ana"
    (tmp_path / "inbox").mkdir()
    with open(tmp_path / "inbox" / "ana.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "inbox" / "broken.csv").write_text("council,codes\nWestmarch,LA01\n", encoding="utf-8")
    shutil.copy(SAMPLE_ROUND / "HOL-02.docx", round_dir / "HOL-02.docx")

    second = runner.invoke(main, ["nightly", "--config", str(path)])
    assert second.exit_code == 0, second.output
    assert "1 new and 0 changed files" in second.output and "1 review decisions (1 files rejected)" in second.output
    assert (tmp_path / "inbox" / "done" / "ana.csv").exists()
    assert (tmp_path / "inbox" / "rejected" / "broken.csv").exists()
    errors = (tmp_path / "inbox" / "rejected" / "broken.csv.errors.txt").read_text()
    assert "there is no 'passage_id' column" in errors
    assert not list((tmp_path / "inbox").glob("*.csv"))
    hollins = query(db, "SELECT count(*) FROM passages WHERE transcript_key LIKE 'hollins-vale/%'")[0][0]
    runs = query(db, "SELECT report FROM runs ORDER BY started_at")
    second_report = json.loads(runs[-1][0])
    assert second_report["embed"]["embedded"] == hollins  # one interview's worth of encoding, not the round's
    assert second_report["code"]["coded"] == hollins
    assert second_report["reviews"]["applied"] == 1

    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "reports").rglob("*.csv")}
    third = runner.invoke(main, ["nightly", "--config", str(path)])
    assert third.exit_code == 0, third.output
    assert summary_line(third.output).startswith(
        "nightly completed: 0 new and 0 changed files, 0 quarantined, 0 review decisions (0 files rejected), "
        "0 embedded, no training, 0 coded")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "reports").rglob("*.csv")} == mtimes
    statuses = [r[0] for r in query(db, "SELECT status FROM runs ORDER BY started_at")]
    assert statuses == ["completed"] * 3
    assert query(db, "SELECT reviewer, codes FROM gold") == [("Ana", ["LA05"])]


def test_a_second_writer_is_refused_with_a_clear_message(tmp_path, small_round):
    db = tmp_path / "q.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from pipeline.lock import writer_lock
            with writer_lock({str(db)!r}, purpose="qcode run other-round"):
                print("holding", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = CliRunner().invoke(main, ["run", str(small_round), "--db", str(db), "--out", str(tmp_path / "out")])
        assert result.exit_code == 1
        assert f"another qcode command is using {db} (pid {holder.pid}, qcode run other-round, since" in result.output
        with pytest.raises(StoreError, match="waited 1 s"):
            with writer_lock(db, wait_seconds=1):
                pass
    finally:
        holder.kill()
        holder.wait()
    with writer_lock(db, wait_seconds=5):  # released by the operating system when the holder died
        pass
    assert not db.exists()  # nothing was written while the lock was held elsewhere


KILL_SCRIPT = """
import os, sys, time
from pipeline import steps
from pipeline.config import Settings
from pipeline.store import Store
settings = Settings.load(db_path={db!r}, out_dir={out!r})
steps.EMBED_CHUNK = 16
mode = {mode!r}
if mode == "embedding":
    from pipeline.embed import Embedder
    original = Embedder.encode
    calls = []
    def slow_encode(self, texts, **kw):
        calls.append(1)
        if len(calls) == 3:
            print("mid-embedding", flush=True)
            time.sleep(600)
        return original(self, texts, **kw)
    Embedder.encode = slow_encode
else:
    original = Store.save_transcript
    saved = []
    def save_then_stall(self, segmented, run_id, source_key=None):
        saved.append(1)
        if len(saved) == 2:
            self.con.execute("BEGIN TRANSACTION")
            self.con.execute("DELETE FROM passages")
            self.con.execute("DELETE FROM review_decisions")
            print("mid-write", flush=True)
            time.sleep(600)
        return original(self, segmented, run_id, source_key)
    Store.save_transcript = save_then_stall
run_id = steps.new_run_id()
steps.begin_run(settings, {round_dir!r}, run_id)
steps.ingest_round(__import__("pathlib").Path({round_dir!r}), settings, run_id)
steps.embed_passages(settings)
"""


@pytest.mark.parametrize("mode, marker", [("embedding", "mid-embedding"), ("write", "mid-write")])
def test_a_killed_run_leaves_a_consistent_database_and_the_next_run_completes(coded_world, tmp_path, mode, marker):
    round_dir, settings = coded_world
    with open(settings.out_dir / "westmarch" / "review.csv", encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[2]["codes"] = "LA05"
    review = tmp_path / "review.csv"
    with open(review, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from pipeline import review_steps

    review_steps.import_review_files(settings, [review], reviewer="Ana")
    for name in ("HOL-02.docx", "EAS-01.md", "IRE-03.md"):  # new work for the run that will be killed
        shutil.copy(SAMPLE_ROUND / name, round_dir / name)
    script = KILL_SCRIPT.format(db=str(settings.db_path), out=str(settings.out_dir), mode=mode, round_dir=str(round_dir))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == marker
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    assert query(settings.db_path, "SELECT reviewer, codes FROM gold") == [("Ana", ["LA05"])]  # nothing lost
    ingest, embed, code, _ = run_steps(round_dir, settings)

    db = settings.db_path
    assert query(db, "SELECT count(*) = count(DISTINCT passage_id) FROM passages") == [(True,)]
    active = query(db, "SELECT count(*) FROM passages WHERE retired_at IS NULL")[0][0]
    hashes = query(db, "SELECT count(DISTINCT text_hash) FROM passages WHERE retired_at IS NULL")[0][0]
    assert query(db, "SELECT count(*) FROM embeddings e JOIN (SELECT DISTINCT text_hash FROM passages "
                     "WHERE retired_at IS NULL) p USING (text_hash)")[0][0] == hashes
    assert query(db, "SELECT count(DISTINCT passage_id) FROM coding_sets WHERE coder_id = ?", [code["coder_id"]])[0][0] == active
    assert sorted(query(db, "SELECT DISTINCT council FROM transcripts WHERE retired_at IS NULL")) == [
        ("Eastmoor",), ("Fenley",), ("Hollins Vale",), ("Irewell",), ("Westmarch",)]
    assert query(db, "SELECT reviewer, codes FROM gold") == [("Ana", ["LA05"])]
    assert "interrupted" in {r[0] for r in query(db, "SELECT status FROM runs")}


def test_embedding_and_coding_on_a_local_dask_cluster_match_the_in_process_run(prefect_harness, small_round, tmp_path,
                                                                               settings):
    from dataclasses import replace

    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    from flows.run_round import run_round

    here = replace(settings, db_path=tmp_path / "local.duckdb", out_dir=tmp_path / "local-reports")
    expected = run_round(str(small_round), here)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        distributed_flow = run_round.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        report = distributed_flow(str(small_round), settings, distributed=True)

    assert report["status"] == "completed"
    assert report["embed"]["embedded"] == expected["embed"]["embedded"] > 0
    assert report["code"]["coded"] == expected["code"]["coded"]
    sql = "SELECT passage_id, code_id FROM codings WHERE applied ORDER BY 1, 2"
    assert query(settings.db_path, sql) == query(here.db_path, sql)


def test_a_failing_round_does_not_stop_the_others_and_the_run_ends_failed(prefect_harness, tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    shutil.copy(SAMPLE_ROUND / "FEN-03.txt", good / "FEN-03.txt")
    shutil.copy(SAMPLE_ROUND / "manifest.csv", good / "manifest.csv")
    (bad / "manifest.csv").write_text("council,interview_id\nX,1\n", encoding="utf-8")  # no 'file' column
    path = write_config(tmp_path, '[nightly]\nrounds = ["bad", "good"]\n[qcode]\ndatabase = "q.duckdb"\n')

    result = CliRunner().invoke(main, ["nightly", "--config", str(path)])

    assert result.exit_code == 1
    assert "failed: ingest bad: " in result.output and "needs a 'file' column" in result.output
    assert summary_line(result.output).startswith("nightly failed: 1 new and 0 changed files")
    assert query(tmp_path / "q.duckdb", "SELECT DISTINCT council FROM transcripts") == [("Fenley",)]
    [(status,)] = query(tmp_path / "q.duckdb", "SELECT status FROM runs")
    assert status == "completed with failures"
