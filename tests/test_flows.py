"""The qcode-run Prefect flow end to end, through the CLI, on a real temporary Prefect server."""

from __future__ import annotations

import csv
import json

import duckdb
import pytest
from click.testing import CliRunner

from pipeline.cli import main


def test_qcode_run_end_to_end(prefect_harness, small_round, tmp_path, caplog):
    (small_round / "broken.txt").write_bytes(b"\x00\x00binary")
    db, out = tmp_path / "q.duckdb", tmp_path / "reports"

    result = CliRunner().invoke(main, ["run", str(small_round), "--db", str(db), "--out", str(out)])

    assert result.exit_code == 0, result.output
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
