"""The qcode-run Prefect flow end to end through the CLI, and how qcode finds or starts its Prefect server."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from conftest import SAMPLE_ROUND, query
from flows.prefect_server import DEFAULT_STARTUP_TIMEOUT, TIMEOUT_SETTING, WAITING_MESSAGE, startup_timeout
from pipeline.cli import main


def test_qcode_run_end_to_end(prefect_harness, small_round, tmp_path, caplog):
    (small_round / "broken.txt").write_bytes(b"\x00\x00binary")
    db, out = tmp_path / "q.duckdb", tmp_path / "reports"

    result = CliRunner().invoke(main, ["run", str(small_round), "--db", str(db), "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert WAITING_MESSAGE not in result.output  # PREFECT_API_URL names the harness's server: none is started
    summary = result.output.strip().splitlines()[-1]
    assert summary.startswith("3 files (3 new, 0 changed, 0 unchanged), 1 quarantined, ")
    assert "quarantined broken.txt: is not a text file" in result.output
    report = json.loads((out / "run-report.json").read_text())
    assert report["status"] == "completed"
    assert report["ingest"]["redaction_total"] == int(summary.split(" redactions")[0].rsplit(" ", 1)[1])
    con = duckdb.connect(str(db), read_only=True)
    try:
        status, stored = con.execute("SELECT status, report FROM runs").fetchone()
        applied = con.execute("SELECT count(*) FROM codings WHERE applied").fetchone()[0]
    finally:
        con.close()
    assert status == "completed" and json.loads(stored)["run_id"] == report["run_id"]
    assert f"{applied} codings applied" in summary
    with open(out / "councils_by_code.csv", encoding="utf-8-sig", newline="") as handle:
        matrix = list(csv.reader(handle))
    assert [row[0] for row in matrix[1:]] == ["Fenley", "Hollins Vale", "Westmarch", "councils with code"]
    # no passage text in logs: Prefect and qcode log counts and file names only
    texts = [r["text"] for r in csv.DictReader(open(out / "westmarch" / "review.csv", encoding="utf-8-sig"))]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert not any(text in logged for text in texts if len(text) > 20)


def _fresh_user_environment(tmp_path, **extra) -> dict:
    """The environment of a new user: no Prefect or qcode settings, an empty Prefect home; but the suite's
    encoder (tuning the default mpnet takes 10-15 minutes, so the suite codes with MiniLM: see conftest)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QCODE_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), QCODE_MODEL=os.environ["QCODE_MODEL"], **extra)
    return env


def _qcode_command() -> str:
    beside_python = Path(sys.executable).with_name("qcode")
    return str(beside_python) if beside_python.exists() else shutil.which("qcode")


def test_the_readme_command_codes_the_sample_round_with_an_empty_prefect_home(tmp_path):
    shutil.copytree(SAMPLE_ROUND, tmp_path / "transcripts_sample")  # what a fresh clone has beside the code

    # A new user's Prefect home and folders; the suite's tuned encoder is shared (building it again here would
    # add 80 s to every run; tests/test_tune.py covers the build).
    env = _fresh_user_environment(tmp_path, QCODE_ENCODERS=os.environ["QCODE_ENCODERS"])
    done = subprocess.run([_qcode_command(), "run", "transcripts_sample/"], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=600)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert WAITING_MESSAGE in done.stderr and "Prefect's local server is up (" in done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("15 files (15 new, 0 changed, 0 unchanged), 0 quarantined, ")
    assert summary.endswith("; reports in reports/")
    assert query(tmp_path / "data" / "qcode.duckdb", "SELECT count(DISTINCT council) FROM transcripts") == [(6,)]
    applied = query(tmp_path / "data" / "qcode.duckdb", "SELECT count(*) FROM codings WHERE applied")[0][0]
    assert applied > 0 and f"{applied} codings applied" in summary
    assert len(list((tmp_path / "reports").glob("*/review.csv"))) == 6


def _run_with_prefect_home(tmp_path, env_extra=None, profile=None):
    env = _fresh_user_environment(tmp_path, **(env_extra or {}))
    if profile:
        (tmp_path / "prefect-home").mkdir()
        (tmp_path / "prefect-home" / "profiles.toml").write_text(profile, encoding="utf-8")
    shutil.copytree(SAMPLE_ROUND, tmp_path / "round")
    return subprocess.run([_qcode_command(), "run", "round", "--db", "data/q.duckdb"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300)


def _assert_one_line_timeout_error(done, tmp_path, seconds):
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    waiting, error = done.stderr.strip().splitlines()
    assert waiting == WAITING_MESSAGE
    assert error.startswith(f"Error: Prefect's local server did not answer within {seconds} s (your setting). "
                            "Run the same command again (a second start is faster), raise the wait with "
                            f"{TIMEOUT_SETTING}=300, or point PREFECT_API_URL at a running Prefect server")
    log = tmp_path / error.rsplit("details in ", 1)[1].rstrip(")")  # relative to where the user ran qcode
    assert log.parent == tmp_path / "data" / "logs"
    assert "Timed out while attempting to connect to ephemeral Prefect API server" in log.read_text(encoding="utf-8")
    assert not (tmp_path / "data" / "q.duckdb").exists()


def test_a_startup_timeout_far_too_short_is_one_line_and_exit_1(tmp_path):
    done = _run_with_prefect_home(tmp_path, env_extra={TIMEOUT_SETTING: "1"})
    _assert_one_line_timeout_error(done, tmp_path, 1)


def test_the_users_own_timeout_in_a_prefect_profile_wins_over_qcodes_default(tmp_path):
    profile = f'active = "mine"\n\n[profiles.mine]\n{TIMEOUT_SETTING} = "2"\nPREFECT_SERVER_ALLOW_EPHEMERAL_MODE = "true"\n'
    done = _run_with_prefect_home(tmp_path, profile=profile)
    _assert_one_line_timeout_error(done, tmp_path, 2)


def test_without_a_setting_qcode_waits_longer_than_prefects_default():
    if TIMEOUT_SETTING in os.environ:
        pytest.skip(f"{TIMEOUT_SETTING} is set in this environment")
    from prefect.settings import get_current_settings

    assert get_current_settings().server.ephemeral.startup_timeout_seconds == 20  # Prefect's, too short here
    assert startup_timeout() == (DEFAULT_STARTUP_TIMEOUT, False) and DEFAULT_STARTUP_TIMEOUT >= 120


def test_an_unreachable_prefect_api_url_is_one_line_and_no_server_is_started(small_round, tmp_path):
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    servers_before = dict(SubprocessASGIServer._instances)
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        result = CliRunner().invoke(main, ["run", str(small_round), "--db", str(tmp_path / "q.duckdb"),
                                           "--out", str(tmp_path / "reports")])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"Error: PREFECT_API_URL is http://127.0.0.1:{port}/api but no Prefect server answers "
                           "there (ConnectError). Start it ('prefect server start'), correct PREFECT_API_URL, or unset")
    assert SubprocessASGIServer._instances == servers_before
    assert not (tmp_path / "q.duckdb").exists()
