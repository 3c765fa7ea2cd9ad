"""The gate covers metadata and file names; a file's identity is its path in the round folder.

Real files, the real gate, the real model and real DuckDB files. The planted
values are ones the gate catches today (titled names, known names, e-mail
addresses, phone numbers) or that qcode must drop unread (unknown keys).
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
from dataclasses import replace

import duckdb
import pytest

from conftest import SAMPLE_ROUND, query, run_steps
from pipeline import review_steps, steps
from pipeline.errors import RoundError
from pipeline.ingest import file_key, read_round, read_transcript, round_key
from pipeline.store import SCHEMA_VERSION, Store

KNOWN_NAMES = "Helen Marsh\nTom Ridley\nPriya Chandran\nBarnaby Culpepper\n"

DR_FILE = "Dr Esme Ravensworth.md"
DR_TEXT = """---
council: Westmarch
council_type: county
respondent_role: Dr Octavia Nightingale
interviewer: Jane Doe
contact: jane.doe@example.org
---
# Interview notes for Dr Esme Ravensworth, call 07700 900123

Interviewer: Thanks Tom Ridley. Can I reach you at t.ridley@westmarch.gov.uk afterwards?

Respondent: Of course. We pooled the budgets with health and it took a year to get the cabinet on side.

Interviewer: What held you back?

Respondent: Mostly the procurement rules, and the time it took to get everyone to agree on the risks.
"""
CULPEPPER_FILE = "Interview Barnaby Culpepper.txt"
CULPEPPER_TEXT = """I: What made the difference?
R: Giving frontline staff permission to try things without asking three committees first.
"""
KNOWN_NAME_ID_FILE = "HOL-77.md"
KNOWN_NAME_ID_TEXT = """---
council: Hollins Vale
interview_id: Tom Ridley
respondent_role: manager
---
Interviewer: Where did the ideas come from?
Respondent: Mostly from residents' complaints, which we started reading as a to-do list.
"""
PLANTED = ["Esme", "Ravensworth", "Octavia", "Nightingale", "Jane Doe", "jane.doe@example.org", "07700 900123",
           "Tom Ridley", "Ridley", "t.ridley@westmarch.gov.uk", "Barnaby", "Culpepper", "Rupert Blackwood",
           "Blackwood"]


def hostile_round(round_dir, *, sample_files=("WMC-01.md", "FEN-03.txt")):
    """A couple of sample interviews plus files with personal data in every place it can hide."""
    round_dir.mkdir()
    for name in sample_files:
        shutil.copy(SAMPLE_ROUND / name, round_dir / name)
    (round_dir / "known_names.txt").write_text(KNOWN_NAMES, encoding="utf-8")
    (round_dir / "manifest.csv").write_text(
        "file,council,council_type,interview_id,respondent_role,round,date\n"
        "FEN-03.txt,Fenley,district,FEN-03,politician,2026-spring,2026-04-03\n"
        f"{CULPEPPER_FILE},Fenley,district,,Cllr Rupert Blackwood,2026-spring,2026-04-05\n", encoding="utf-8")
    (round_dir / DR_FILE).write_text(DR_TEXT, encoding="utf-8")
    (round_dir / CULPEPPER_FILE).write_text(CULPEPPER_TEXT, encoding="utf-8")
    (round_dir / KNOWN_NAME_ID_FILE).write_text(KNOWN_NAME_ID_TEXT, encoding="utf-8")
    return round_dir


def everything_stored_or_shown(settings, caplog, capsys) -> list[tuple[str, str]]:
    """(where, text) for every non-BLOB column of every table, every report's path and content, the log and
    the terminal output: everywhere personal data could come to rest."""
    places = []
    con = duckdb.connect(str(settings.db_path), read_only=True)
    try:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            columns = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                                 "WHERE table_name = ? AND data_type <> 'BLOB'", [table]).fetchall()]
            quoted = ", ".join(f'"{c}"' for c in columns)
            places.append((f"table {table}", repr(con.execute(f"SELECT {quoted} FROM {table}").fetchall())))
    finally:
        con.close()
    for path in sorted(p for p in settings.out_dir.rglob("*") if p.is_file()):
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
        places.append((f"report {path.relative_to(settings.out_dir)}", f"{path.relative_to(settings.out_dir)}\n{text}"))
    captured = capsys.readouterr()
    places.append(("the log and terminal output", caplog.text + captured.out + captured.err))
    return places


def assert_none_planted(text: str, where: str) -> None:
    found = [v for v in PLANTED if v.lower() in text.lower()]
    assert not found, f"{found} leaked into {where}"


# --------------------------------------------------------------------------- reading: metadata and file names

def test_metadata_values_are_gated_and_unknown_keys_are_dropped_by_name(tmp_path):
    round_dir = hostile_round(tmp_path / "round", sample_files=())

    transcripts, quarantined = read_round(round_dir)

    assert quarantined == []
    by_key = {t.file_key: t for t in transcripts}
    dr = by_key[file_key(DR_FILE)]
    assert dr.meta.respondent_role == "Dr [PERSON]"
    assert dr.dropped_keys == ("contact", "interviewer")
    assert_none_planted(repr(dr.meta) + repr(dr.dropped_keys) + dr.source, "the gated record")
    assert ("PERSON", "metadata key respondent_role") in {(f.kind, f.where) for f in dr.findings}
    culpepper = by_key[file_key(CULPEPPER_FILE)]
    assert culpepper.meta.respondent_role == "Cllr [PERSON]"
    assert ("PERSON", "metadata key respondent_role (manifest.csv)") in {(f.kind, f.where) for f in culpepper.findings}
    ridley = by_key[file_key(KNOWN_NAME_ID_FILE)]
    assert ridley.meta.interview_id == "[PERSON]" and ridley.meta.key == "hollins-vale/[PERSON]"
    assert ridley.source == KNOWN_NAME_ID_FILE  # a clean file name is shown as it is


def test_a_file_is_shown_by_its_gated_name_and_known_by_a_key_of_its_path(tmp_path):
    round_dir = hostile_round(tmp_path / "round", sample_files=("WMC-01.md",))
    (round_dir / "Cllr Rupert Blackwood notes.txt").write_bytes(b"\x00\x01binary")

    transcripts, quarantined = read_round(round_dir)

    labels = {t.file_key: t.source for t in transcripts}
    assert labels[file_key("WMC-01.md")] == "WMC-01.md"
    assert labels[file_key(DR_FILE)] == f"Dr [PERSON].md ({file_key(DR_FILE)})"
    assert labels[file_key(CULPEPPER_FILE)] == f"Interview [PERSON].txt ({file_key(CULPEPPER_FILE)})"
    assert re.fullmatch(r"file-[0-9a-f]{12}", file_key(DR_FILE))
    # without an interview_id a file is known by its name, or by its key when its name holds a name
    ids = {t.file_key: t.meta.interview_id for t in transcripts}
    assert ids[file_key(DR_FILE)] == file_key(DR_FILE)
    assert ids[file_key(CULPEPPER_FILE)] == file_key(CULPEPPER_FILE)
    assert [(f.kind, f.where) for f in next(t for t in transcripts if t.file_key == file_key(DR_FILE)).findings
            if f.where == "the file name"] == [("PERSON", "the file name")]
    [bad] = quarantined
    assert bad.source == f"Cllr [PERSON] notes.txt ({file_key('Cllr Rupert Blackwood notes.txt')})"
    assert "not a text file" in bad.reason
    assert_none_planted(repr([(t.source, t.meta, t.findings, t.dropped_keys) for t in transcripts] + quarantined),
                        "labels, metadata and reasons")


def test_transcript_errors_and_manifest_errors_name_the_file_by_its_gated_label(tmp_path):
    empty = tmp_path / "Dr Esme Ravensworth.txt"
    empty.write_text("---\ncouncil: Westmarch\n---\n", encoding="utf-8")
    with pytest.raises(Exception) as info:
        read_transcript(empty)
    assert str(info.value).startswith("Dr [PERSON].txt (file-") and "is empty" in str(info.value)

    (tmp_path / "manifest.csv").write_text(f"file,council\n{DR_FILE},Fenley\n{DR_FILE},Fenley\n", encoding="utf-8")
    with pytest.raises(RoundError) as info:
        read_round(tmp_path)
    assert "line 3: file 'Dr [PERSON].md (file-" in str(info.value)
    assert_none_planted(str(info.value), "the manifest error")


# --------------------------------------------------------------------------- the ingest step

def test_interviewer_turns_and_text_before_the_first_turn_are_redacted_where_they_are_stored(tmp_path, settings):
    round_dir = tmp_path / "round"
    round_dir.mkdir()
    (round_dir / "known_names.txt").write_text(KNOWN_NAMES, encoding="utf-8")
    (round_dir / "WMC-70.md").write_text(DR_TEXT.replace("respondent_role: Dr Octavia Nightingale\n", ""),
                                         encoding="utf-8")

    ingest = steps.ingest_round(round_dir, settings, steps.new_run_id())

    assert ingest.new == ["WMC-70.md"] and ingest.redactions["WMC-70.md"] == {"EMAIL": 1, "PERSON": 2, "PHONE": 1}
    [(stored,)] = query(settings, "SELECT anonymised_text FROM transcripts")
    assert stored.startswith("# Interview notes for Dr [PERSON], call [PHONE]\n")
    with Store(settings.db_path) as store:
        questions = [p["question"] for p in store.active_passages()]
    assert questions[0] == "Thanks [PERSON]. Can I reach you at [EMAIL] afterwards?"
    assert_none_planted(stored + " ".join(questions), "stored text and review questions")


def test_reject_policy_names_the_kind_and_place_of_every_finding_never_the_value(tmp_path, settings):
    round_dir = tmp_path / "round"
    round_dir.mkdir()
    (round_dir / "known_names.txt").write_text(KNOWN_NAMES, encoding="utf-8")
    clean_body = "Interviewer: What changed?\nRespondent: We pooled the budgets with health.\n"
    (round_dir / "meta-only.md").write_text(
        f"---\ncouncil: Westmarch\nrespondent_role: Dr Octavia Nightingale\n---\n{clean_body}", encoding="utf-8")
    (round_dir / "Barnaby Culpepper.md").write_text(f"---\ncouncil: Westmarch\n---\n{clean_body}", encoding="utf-8")
    (round_dir / "body.md").write_text(
        f"---\ncouncil: Fenley\n---\n{clean_body}Interviewer: Thanks Tom Ridley.\nRespondent: Mail me.\n",
        encoding="utf-8")
    (round_dir / "clean.md").write_text(f"---\ncouncil: Irewell\n---\n{clean_body}", encoding="utf-8")
    strict = replace(settings, anonymisation_policy="reject")

    ingest = steps.ingest_round(round_dir, strict, steps.new_run_id())

    reasons = {q.source: q.reason for q in ingest.quarantined}
    assert ingest.new == ["clean.md"]
    assert "contains personal data (1 PERSON): PERSON in metadata key respondent_role;" in reasons["meta-only.md"]
    label = f"[PERSON].md ({file_key('Barnaby Culpepper.md')})"
    assert "contains personal data (1 PERSON): PERSON in the file name;" in reasons[label]
    assert "contains personal data (1 PERSON): PERSON on line 6;" in reasons["body.md"]  # line 6 of the file
    assert_none_planted(repr(ingest.quarantined), "quarantine reasons")


def test_nothing_planted_reaches_the_database_the_reports_or_the_log(tmp_path, settings, caplog, capsys):
    round_dir = hostile_round(tmp_path / "round")
    caplog.set_level(logging.DEBUG)

    ingest, embed, code, exports = run_steps(round_dir, settings)
    run_id = query(settings, "SELECT run_id FROM runs")[0][0]
    steps.finish_run(settings, run_id, "completed", {"ingest": steps.ingest_report_dict(ingest)})

    assert ingest.quarantined == [] and len(ingest.new) == 5
    assert ingest.warnings and "interviewer" in ingest.warnings[0] and "contact" in ingest.warnings[0]
    assert code["applied"] > 0
    assert query(settings, "SELECT count(*) FROM transcripts") == [(5,)]
    places = everything_stored_or_shown(settings, caplog, capsys)
    assert sum(where.startswith("report ") for where, _ in places) > 5
    for where, text in places:
        assert_none_planted(text, where)


# --------------------------------------------------------------------------- a file's identity is its path

@pytest.fixture
def sample_copy(tmp_path):
    round_dir = tmp_path / "sample"
    shutil.copytree(SAMPLE_ROUND, round_dir)
    return round_dir


def active_counts(settings) -> tuple[int, int]:
    return (query(settings, "SELECT count(*) FROM transcripts WHERE retired_at IS NULL")[0][0],
            query(settings, "SELECT count(*) FROM passages WHERE retired_at IS NULL")[0][0])


def test_renaming_a_council_inside_a_file_retires_the_interview_it_was(sample_copy, settings):
    steps.ingest_round(sample_copy, settings, steps.new_run_id())
    assert active_counts(settings) == (15, 662)
    path = sample_copy / "WMC-02.md"
    path.write_text(path.read_text(encoding="utf-8").replace("council: Westmarch", "council: West March", 1),
                    encoding="utf-8")

    ingest = steps.ingest_round(sample_copy, settings, steps.new_run_id())

    assert ingest.changed == ["WMC-02.md"] and ingest.new == [] and len(ingest.unchanged) == 14
    assert active_counts(settings) == (15, 662)
    councils = query(settings, "SELECT council, retired_at IS NULL FROM transcripts WHERE interview_id = 'WMC-02' "
                               "ORDER BY ingested_at")
    assert councils == [("Westmarch", False), ("West March", True)]
    # and back again: the first key's passages come back, no ghost of the second stays
    path.write_text(path.read_text(encoding="utf-8").replace("council: West March", "council: Westmarch", 1),
                    encoding="utf-8")
    steps.ingest_round(sample_copy, settings, steps.new_run_id())
    assert active_counts(settings) == (15, 662)


def test_a_deleted_file_leaves_the_reports_and_its_gold_stays_readable(small_round, settings):
    shutil.copy(SAMPLE_ROUND / "WMC-02.md", small_round / "WMC-02.md")
    run_steps(small_round, settings)
    wmc02 = [r[0] for r in query(settings, "SELECT passage_id FROM passages WHERE transcript_key = 'westmarch/WMC-02'")]
    review = settings.out_dir / "westmarch" / "review.csv"
    with open(review, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    reviewed = next(r for r in rows if r["passage_id"] == wmc02[0])
    decision = settings.out_dir.parent / "decisions.csv"
    decision.write_text(f"passage_id,codes,reviewed\n{reviewed['passage_id']},LA01,yes\n", encoding="utf-8")
    [(_, result)] = review_steps.import_review_files(settings, [decision], reviewer="A. Reviewer")
    assert result.applied == 1
    (small_round / "WMC-02.md").unlink()
    (small_round / "FEN-03.txt").unlink()

    ingest, *_ = run_steps(small_round, settings)

    assert ingest.retired == ["FEN-03.txt", "WMC-02.md"]
    westmarch = review.read_text(encoding="utf-8-sig")
    assert not any(pid in westmarch for pid in wmc02)
    assert not (settings.out_dir / "fenley").exists()  # a council with no interviews left has no reports
    assert "Fenley" not in (settings.out_dir / "councils_by_code.csv").read_text(encoding="utf-8-sig")
    with Store(settings.db_path) as store:
        assert store.gold([wmc02[0]])[wmc02[0]]["codes"] == ("LA01",)
        assert wmc02[0] in {g["passage_id"] for g in store.gold_passages()}
        assert all(p["transcript_key"] != "westmarch/WMC-02" for p in store.active_passages())


def test_running_one_round_never_retires_another_rounds_files(tmp_path, settings):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, name in ((first, "WMC-01.md"), (second, "IRE-01.md")):
        folder.mkdir()
        shutil.copy(SAMPLE_ROUND / name, folder / name)
    steps.ingest_round(first, settings, steps.new_run_id())

    ingest = steps.ingest_round(second, settings, steps.new_run_id())

    assert ingest.retired == []
    assert query(settings, "SELECT count(*) FROM transcripts WHERE retired_at IS NULL")[0][0] == 2
    assert round_key(first) != round_key(second)


def test_a_file_renamed_on_disk_keeps_its_interview(small_round, settings):
    steps.ingest_round(small_round, settings, steps.new_run_id())
    (small_round / "WMC-01.md").rename(small_round / "westmarch-ceo.md")

    ingest = steps.ingest_round(small_round, settings, steps.new_run_id())

    assert ingest.retired == [] and "westmarch-ceo.md" in ingest.unchanged
    assert query(settings, "SELECT count(*) FROM transcripts WHERE retired_at IS NULL")[0][0] == 3
    assert query(settings, "SELECT source_file FROM transcripts WHERE interview_id = 'WMC-01'") == [("westmarch-ceo.md",)]


SCHEMA_2_TRANSCRIPTS = """
CREATE TABLE schema_info (version INTEGER NOT NULL);
INSERT INTO schema_info VALUES (2);
CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ,
    round_dir VARCHAR, status VARCHAR NOT NULL, report JSON);
CREATE TABLE transcripts (
    transcript_key VARCHAR NOT NULL, version INTEGER NOT NULL,
    council VARCHAR NOT NULL, council_type VARCHAR, interview_id VARCHAR NOT NULL,
    respondent_role VARCHAR, round VARCHAR, interview_date VARCHAR, source_file VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL, anonymised_text VARCHAR NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL, run_id VARCHAR, retired_at TIMESTAMPTZ, source_key VARCHAR,
    PRIMARY KEY (transcript_key, version)
);
"""


def test_a_schema_2_database_gets_file_keys_and_loses_raw_file_names(tmp_path):
    round_dir = tmp_path / "round"
    round_dir.mkdir()
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(SCHEMA_2_TRANSCRIPTS)
    con.execute("INSERT INTO runs VALUES ('r1', now(), now(), ?, 'completed', NULL)", [str(round_dir)])
    con.execute("INSERT INTO transcripts VALUES ('westmarch/W1', 1, 'Westmarch', '', 'W1', '', '', '', "
                "'Dr Esme Ravensworth.md', 'h', 'text', now(), 'r1', NULL, 'k')")
    con.close()

    with Store(db) as store:
        row = store.con.execute("SELECT source_file, file_key, round_key FROM transcripts").fetchone()
        version = store.con.execute("SELECT max(version) FROM schema_info").fetchone()[0]

    assert SCHEMA_VERSION == version == 3
    assert row == (file_key(DR_FILE), file_key(DR_FILE), round_key(round_dir))


# --------------------------------------------------------------------------- every form the issue found missed

PLANTED_ROUND_KNOWN = "Niamh O'Rourke\nSiân Pritchard\nJosé Alvarez\n"
PLANTED_BODY = """---
council: Irewell
council_type: metropolitan
respondent_role: chief executive
---
Interviewer: Who made the difference?

Respondent: Mr McAllister did, and Mr Will Hargreaves backed him. Mrs May Fotheringay chaired the board.

Interviewer: And the members?

Respondent: Cllr J Braithwaite argued for it and DR ORLA KINSELLA ran the pilot with Dr\u00a0Fenwick.
Dr van der Merwe objected, and so did Cllr Smith-Hollingworth. Niamh O\u2019Rourke wrote the paper.
Later siân pritchard and Jose Alvarez joined. I spoke to Sarah Jones about it last spring.

Interviewer: Where was the pilot?

Respondent: At m14 5tq first, then cf103at and Sw1a 2Aa. Ring 0044 7700 900321 or 07700.900.654,
or mail fergus.o'hare@example.com, or anna dot price at gmail dot com.
My NI number is QQ 12 34 56 C, I was born on 3 March 1961 and I live at 14 Acacia Avenue.
"""
PLANTED_FORMS = {
    "PERSON": ["McAllister", "Hargreaves", "Fotheringay", "Braithwaite", "ORLA", "KINSELLA", "Fenwick", "Merwe",
               "Hollingworth", "Rourke", "Niamh", "pritchard", "Alvarez", "Sarah Jones"],
    "POSTCODE": ["m14 5tq", "cf103at", "Sw1a 2Aa"],
    "PHONE": ["7700 900321", "900.654"],
    "EMAIL": ["fergus", "anna dot price", "gmail"],
    "NI_NUMBER": ["QQ 12 34 56 C"],
    "DATE_OF_BIRTH": ["3 March 1961"],
    "ADDRESS": ["Acacia"],
}


def planted_round(round_dir):
    round_dir.mkdir()
    shutil.copy(SAMPLE_ROUND / "WMC-01.md", round_dir / "WMC-01.md")
    (round_dir / "known_names.txt").write_text(PLANTED_ROUND_KNOWN, encoding="utf-8")
    (round_dir / "IRE-09.md").write_text(PLANTED_BODY, encoding="utf-8")
    return round_dir


def leaked_forms(text: str) -> list[str]:
    return [v for values in PLANTED_FORMS.values() for v in values if v.lower() in text.lower()]


def test_every_planted_form_is_redacted_everywhere_it_could_be_stored_or_shown(tmp_path, settings, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    round_dir = planted_round(tmp_path / "round")

    ingest, _, code, _ = run_steps(round_dir, settings)

    assert ingest.quarantined == [] and sorted(ingest.new) == ["IRE-09.md", "WMC-01.md"]
    found = ingest.redactions["IRE-09.md"]
    assert {kind for kind in PLANTED_FORMS} <= set(found), found
    for where, text in everything_stored_or_shown(settings, caplog, capsys):
        assert not leaked_forms(text), (where, leaked_forms(text))


def test_under_reject_the_planted_file_is_quarantined_naming_kinds_and_lines_only(tmp_path, settings):
    round_dir = planted_round(tmp_path / "round")
    strict = replace(settings, anonymisation_policy="reject")

    ingest = steps.ingest_round(round_dir, strict, steps.new_run_id())

    quarantined = {q.source: q for q in ingest.quarantined}["IRE-09.md"]
    assert "IRE-09.md" not in ingest.new
    for kind in PLANTED_FORMS:
        assert f" {kind}" in quarantined.reason, (kind, quarantined.reason)
    assert "on line 8" in quarantined.reason  # the first respondent turn with names
    assert not leaked_forms(quarantined.reason)
