"""The run's steps on real files, the real model and a real DuckDB file, without Prefect."""

from __future__ import annotations

import csv
import shutil

from dataclasses import replace

import pytest

from pipeline import steps
from pipeline.errors import RoundError
from conftest import SAMPLE_ROUND, query, run_steps


def run_all(round_dir, settings):
    return run_steps(round_dir, settings)




def test_a_round_is_coded_and_reported(small_round, settings):
    ingest, embed, code, exports = run_all(small_round, settings)

    assert sorted(ingest.new) == ["FEN-03.txt", "HOL-02.docx", "WMC-01.md"]
    assert ingest.quarantined == []
    assert embed["passages"] > 60 and embed["embedded"] > 0
    assert code["coded"] == embed["passages"]
    assert code["applied"] > 0
    councils = {row[0] for row in query(settings, "SELECT DISTINCT council FROM transcripts")}
    assert councils == {"Westmarch", "Fenley", "Hollins Vale"}
    # interviewer turns are stored as context but never become passages
    speakers = {row[0] for row in query(settings, "SELECT DISTINCT speaker FROM passages")}
    assert speakers.isdisjoint({"Interviewer", "I", "Q"})
    for folder in ("westmarch", "fenley", "hollins-vale"):
        with open(settings.out_dir / folder / "review.csv", encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows and all(r["passage_id"].startswith("p") for r in rows)
    fen = list(csv.DictReader(open(settings.out_dir / "fenley" / "review.csv", encoding="utf-8-sig")))
    assert {r["respondent_role"] for r in fen} == {"politician"}  # metadata came from manifest.csv


def test_personal_data_never_reaches_the_database_or_reports(small_round, settings):
    raw_values = ["Helen", "Brenda Okafor", "Priya Chandran", "Priya"]
    source_text = (small_round / "WMC-01.md").read_text() + (small_round / "FEN-03.txt").read_text()
    assert all(v in source_text for v in raw_values)  # the sample really has something to catch

    ingest, *_ = run_all(small_round, settings)

    assert ingest.redactions["FEN-03.txt"] == {"PERSON": 2}
    assert ingest.redactions["WMC-01.md"]["PERSON"] >= 2
    stored = " ".join(r[0] for r in query(settings, "SELECT anonymised_text FROM transcripts"))
    stored += " ".join(r[0] for r in query(settings, "SELECT text FROM passages"))
    exported = " ".join(p.read_text(encoding="utf-8-sig") for p in settings.out_dir.rglob("*.csv"))
    for value in raw_values:
        assert value not in stored
        assert value not in exported
    assert "[PERSON]" in stored


def test_reject_policy_quarantines_files_with_personal_data(small_round, settings):
    strict = replace(settings, anonymisation_policy="reject")
    run_id = steps.new_run_id()
    steps.begin_run(strict, small_round, run_id)
    ingest = steps.ingest_round(small_round, strict, run_id)

    reasons = {q.source: q.reason for q in ingest.quarantined}
    assert set(reasons) == {"WMC-01.md", "FEN-03.txt"}
    assert "contains personal data (2 PERSON)" in reasons["FEN-03.txt"]
    assert "Priya" not in reasons["FEN-03.txt"]
    assert ingest.new == ["HOL-02.docx"]  # the clean file still goes through


def test_bad_files_are_quarantined_and_the_rest_of_the_round_goes_on(small_round, settings):
    (small_round / "empty.txt").write_text("   \n")
    (small_round / "binary.txt").write_bytes(b"\x00\x01\x02PK\x00")
    (small_round / "no-council.md").write_text("Interviewer: Hello?\nRespondent: Hi.\n")
    (small_round / "no-turns.md").write_text("---\ncouncil: Westmarch\n---\nJust some notes without speakers.\n")
    (small_round / "utf16.txt").write_bytes("---\ncouncil: X\n---\nR: hi".encode("utf-16"))

    ingest, embed, code, _ = run_all(small_round, settings)

    reasons = {q.source: q.reason for q in ingest.quarantined}
    assert reasons["empty.txt"].startswith("is empty")
    assert "not a text file" in reasons["binary.txt"]
    assert "not a text file" in reasons["utf16.txt"]
    assert "has no council" in reasons["no-council.md"] and "manifest.csv" in reasons["no-council.md"]
    assert "has no speaker turns" in reasons["no-turns.md"]
    assert sorted(ingest.new) == ["FEN-03.txt", "HOL-02.docx", "WMC-01.md"]
    assert ingest.files_seen == 8
    report_councils = sorted(p.name for p in settings.out_dir.iterdir() if p.is_dir())
    assert report_councils == ["fenley", "hollins-vale", "westmarch"]


def test_a_broken_manifest_stops_the_round_with_the_line_to_fix(small_round, settings):
    (small_round / "manifest.csv").write_text("file,council\nFEN-03.txt,Fenley\nFEN-03.txt,Fenley\n")
    with pytest.raises(RoundError, match=r"manifest.csv, line 3: file 'FEN-03.txt' is listed twice"):
        steps.ingest_round(small_round, settings, steps.new_run_id())


def test_rerun_of_unchanged_round_does_no_new_work(small_round, settings):
    run_all(small_round, settings)
    passages_before = query(settings, "SELECT count(*) FROM passages")[0][0]

    ingest, embed, code, exports = run_all(small_round, settings)

    assert sorted(ingest.unchanged) == ["FEN-03.txt", "HOL-02.docx", "WMC-01.md"]
    assert ingest.new == [] and ingest.changed == []
    assert embed["embedded"] == 0
    assert code["coded"] == 0
    assert {e.status for e in exports} == {"unchanged"}
    assert query(settings, "SELECT count(*) FROM passages")[0][0] == passages_before
    assert query(settings, "SELECT count(*) FROM transcripts")[0][0] == 3


def test_a_rerun_gates_only_new_files_and_loads_no_entity_model_when_nothing_changed(small_round, settings, gate_spy):
    first = steps.ingest_round(small_round, settings, steps.new_run_id())
    assert sorted(gate_spy.files) == ["FEN-03.txt", "HOL-02.docx", "WMC-01.md"]
    gate_spy.reset()

    again = steps.ingest_round(small_round, settings, steps.new_run_id())

    assert gate_spy.files == [] and gate_spy.model_loads == 0  # recognised by hash: nothing gated, no spaCy
    assert sorted(again.unchanged) == sorted(first.new) and again.new == again.changed == again.quarantined == []
    assert again.warnings == first.warnings
    shutil.copy(SAMPLE_ROUND / "FEN-01.md", small_round / "FEN-01.md")

    plus_one = steps.ingest_round(small_round, settings, steps.new_run_id())

    assert gate_spy.files == ["FEN-01.md"]
    assert plus_one.new == ["FEN-01.md"] and sorted(plus_one.unchanged) == sorted(first.new)


def test_a_changed_manifest_row_regates_and_reprocesses_its_file(small_round, settings, gate_spy):
    steps.ingest_round(small_round, settings, steps.new_run_id())
    manifest = small_round / "manifest.csv"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace(",FEN-03,", ",FEN-03b,"), encoding="utf-8")
    gate_spy.reset()

    ingest = steps.ingest_round(small_round, settings, steps.new_run_id())

    assert gate_spy.files == ["FEN-03.txt"]
    assert ingest.changed == ["FEN-03.txt"] and sorted(ingest.unchanged) == ["HOL-02.docx", "WMC-01.md"]
    active = query(settings, "SELECT interview_id FROM transcripts WHERE council = 'Fenley' AND retired_at IS NULL")
    assert active == [("FEN-03b",)]  # the interview the file held before is retired


def test_one_new_interview_rewrites_only_its_council_and_the_cross_council_files(small_round, settings):
    run_all(small_round, settings)
    out = settings.out_dir
    before = {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    fenley_summary = (out / "fenley" / "summary.csv").read_bytes()
    shutil.copy(SAMPLE_ROUND / "FEN-01.md", small_round / "FEN-01.md")  # a second Fenley interview

    ingest, embed, code, exports = run_all(small_round, settings)

    assert ingest.new == ["FEN-01.md"] and embed["embedded"] > 0 and code["coded"] > 0
    status = {e.path.relative_to(out).as_posix(): e.status for e in exports}
    changed = {name for name, s in status.items() if s != "unchanged"}
    assert {"fenley/review.csv", "fenley/summary.csv", "fenley/report.html"} <= changed
    assert changed <= {"fenley/review.csv", "fenley/summary.csv", "fenley/report.html", "councils_by_code.csv",
                       "index.html"}
    for council in ("westmarch", "hollins-vale"):
        for name in ("review.csv", "summary.csv", "report.html"):
            assert status[f"{council}/{name}"] == "unchanged"
            assert (out / council / name).stat().st_mtime_ns == before[f"{council}/{name}"]
    assert (out / "fenley" / "summary.csv").read_bytes() != fenley_summary
    fenley_rows = list(csv.DictReader(open(out / "fenley" / "review.csv", encoding="utf-8-sig")))
    assert {r["interview_id"] for r in fenley_rows} == {"FEN-01", "FEN-03"}
    matrix = {r["council"]: r for r in csv.DictReader(open(out / "councils_by_code.csv", encoding="utf-8-sig"))}
    assert set(matrix) == {"Fenley", "Hollins Vale", "Westmarch", "councils with code"}


def test_changed_file_becomes_a_new_version_and_old_passages_stay_readable(small_round, settings):
    run_all(small_round, settings)
    path = small_round / "WMC-01.md"
    text = path.read_text(encoding="utf-8")
    old_sentence = "We wrote a ten-year ambition"
    assert old_sentence in text
    path.write_text(text.replace(old_sentence, "We drafted a fifteen-year ambition"), encoding="utf-8")
    (settings.out_dir / "westmarch" / "review.csv").unlink()  # as if the reviewer had moved it away

    ingest, embed, code, _ = run_all(small_round, settings)

    assert ingest.changed == ["WMC-01.md"]
    assert embed["embedded"] == 1 and code["coded"] == 1
    versions = query(settings, "SELECT version, retired_at IS NULL FROM transcripts "
                               "WHERE interview_id = 'WMC-01' ORDER BY version")
    assert versions == [(1, False), (2, True)]
    retired = query(settings, "SELECT passage_id, text FROM passages WHERE retired_at IS NOT NULL")
    assert len(retired) == 1 and old_sentence in retired[0][1]
    codings_of_retired = query(settings, f"SELECT count(*) FROM codings WHERE passage_id = '{retired[0][0]}'")
    assert codings_of_retired[0][0] > 0  # still readable, never deleted
    review = (settings.out_dir / "westmarch" / "review.csv").read_text(encoding="utf-8-sig")
    assert old_sentence not in review and "fifteen-year ambition" in review


def test_a_missing_round_folder_is_a_clear_error(tmp_path, settings):
    with pytest.raises(RoundError, match="is not a folder"):
        steps.ingest_round(tmp_path / "nope", settings, steps.new_run_id())


def test_sample_round_has_the_councils_and_formats_it_promises():
    from pipeline.config import PROJECT_ROOT
    from pipeline.ingest import read_round

    transcripts, quarantined = read_round(PROJECT_ROOT / "transcripts_sample")

    assert quarantined == []
    types = {}
    for t in transcripts:
        types.setdefault(t.meta.council, t.meta.council_type)
        assert 1500 <= len(t.text.split()) <= 4000, t.source
    assert len(types) >= 6
    assert set(types.values()) == {"county", "metropolitan", "district"}
    assert {t.source.rsplit(".", 1)[1] for t in transcripts} == {"md", "txt", "docx"}


def test_uncertainty_order_puts_scores_nearest_a_threshold_first_and_reviewed_last():
    from pipeline.schemas import CodedPassage

    thresholds = {"LA01": 0.5, "BR03": 0.4}
    far = CodedPassage("far", "X", "X-1", "t", scores={"LA01": 0.9})            # |0.9-0.5| = 0.40
    near = CodedPassage("near", "X", "X-1", "t", scores={"LA01": 0.2, "BR03": 0.42})  # min(0.30, 0.02) = 0.02
    middle = CodedPassage("middle", "X", "X-1", "t", scores={"LA01": 0.6})      # 0.10
    reviewed = CodedPassage("reviewed", "X", "X-1", "t", scores={"LA01": 0.5}, gold=("LA01",))  # 0.00 but done
    unscored = CodedPassage("unscored", "X", "X-1", "t")
    passages = [far, near, middle, reviewed, unscored]

    ordered = steps.order_for_review(passages, thresholds, "uncertainty")

    assert [p.passage_id for p in ordered] == ["near", "middle", "far", "unscored", "reviewed"]
    assert steps.order_for_review(passages, thresholds, "transcript") == passages
    with pytest.raises(steps.QcodeError, match="unknown review order 'random'"):
        steps.order_for_review(passages, thresholds, "random")


KILLED_WHILE_REPORTING = """
import time
from pathlib import Path
from pipeline import report, steps
from pipeline.config import Settings
settings = Settings.load(db_path={db!r}, out_dir={out!r})
original = report.write_atomically
def write_then_stall(path, data):
    original(path, data)
    if path.name == "review.csv":
        print("mid-reports", flush=True)
        time.sleep(600)
report.write_atomically = write_then_stall
run_id = steps.new_run_id()
steps.begin_run(settings, {round_dir!r}, run_id)
steps.ingest_round(Path({round_dir!r}), settings, run_id)
steps.embed_passages(settings)
steps.code_passages(settings, run_id)
steps.write_round_reports(settings, run_id)
"""


def test_a_run_killed_while_writing_reports_leaves_no_file_the_next_run_mistakes_for_an_edit(coded_world):
    """qcode recorded a report only after writing it: a kill in between left a review.csv it later kept as 'edited'."""
    import shutil
    import signal
    import subprocess
    import sys

    from conftest import SAMPLE_ROUND

    round_dir, settings = coded_world
    for name in ("WMC-02.md", "FEN-01.md"):  # new passages in both councils: every review.csv is rewritten
        shutil.copy(SAMPLE_ROUND / name, round_dir / name)
    script = KILLED_WHILE_REPORTING.format(db=str(settings.db_path), out=str(settings.out_dir), round_dir=str(round_dir))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "mid-reports"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    shutil.copy(SAMPLE_ROUND / "WMC-03.md", round_dir / "WMC-03.md")  # more work before the next run
    shutil.copy(SAMPLE_ROUND / "FEN-02.md", round_dir / "FEN-02.md")
    *_, exports = run_steps(round_dir, settings)
    statuses = {e.path.relative_to(settings.out_dir).as_posix(): e.status for e in exports}
    assert statuses["westmarch/review.csv"] == statuses["fenley/review.csv"] == "written"
    assert not list(settings.out_dir.rglob("review-new.csv"))
