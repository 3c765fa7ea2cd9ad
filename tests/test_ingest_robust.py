"""Ingest never stops a round: damaged Word files, huge turns, YAML alias bombs, mojibake, clear warnings.

Every broken input here is a real file: the Word documents are the shipped sample HOL-02.docx with one part
damaged through zipfile, the text files are written in the encodings other programs really save.
"""

from __future__ import annotations

import json
import shutil
import struct
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import query

from pipeline import steps
from pipeline.cli import main
from pipeline.config import PROJECT_ROOT
from pipeline.errors import RoundError, TranscriptError
from pipeline.ingest import (
    decode_text,
    list_transcript_files,
    read_docx_text,
    read_manifest,
    read_round,
    round_warnings,
    split_front_matter,
    suggest_key,
)

SAMPLE_ROUND = PROJECT_ROOT / "transcripts_sample"
SAMPLE_DOCX = SAMPLE_ROUND / "HOL-02.docx"
ANSWER = "We pooled the budgets with health and it took a year to agree the governance. "

# 351 bytes of front matter that expand to 10**9 strings when aliases are followed ("billion laughs").
ALIAS_BOMB = "\n".join(
    ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(8)])


def docx_with_part(target: Path, part: str, transform) -> Path:
    """A copy of the sample .docx whose ``part`` is replaced by ``transform(original bytes)``."""
    with zipfile.ZipFile(SAMPLE_DOCX) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in source.infolist():
            data = source.read(info.filename)
            copy.writestr(info, transform(data) if info.filename == part else data)
    return target


def docx_with_damaged_compressed_bytes(target: Path) -> Path:
    """A copy of the sample .docx with 100 bytes of word/document.xml's compressed stream flipped (a bad sector)."""
    data = bytearray(SAMPLE_DOCX.read_bytes())
    with zipfile.ZipFile(SAMPLE_DOCX) as archive:
        info = archive.getinfo("word/document.xml")
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length + 100
    data[start:start + 100] = bytes(b ^ 0xFF for b in data[start:start + 100])
    target.write_bytes(bytes(data))
    return target


def truncated_document_xml(target: Path) -> Path:
    return docx_with_part(target, "word/document.xml", lambda xml: xml[:len(xml) // 2])


def not_a_word_body(target: Path) -> Path:
    """Well-formed XML where Word's body should be: python-docx fails on it in a way nobody foresaw."""
    return docx_with_part(target, "word/document.xml", lambda xml: b'<?xml version="1.0"?><notes>kept</notes>')


def md(council: str, interview: str, body: str, extra_front_matter: str = "") -> str:
    return f"---\ncouncil: {council}\ninterview_id: {interview}\n{extra_front_matter}---\n{body}"


# --------------------------------------------------------------------------- damaged .docx

def test_docx_with_truncated_document_xml_is_a_clear_transcript_error(tmp_path):
    path = truncated_document_xml(tmp_path / "HOL-02.docx")
    with pytest.raises(TranscriptError) as info:
        read_docx_text(path)
    assert str(info.value).startswith("HOL-02.docx: ")
    assert "damaged" in info.value.reason and "XMLSyntaxError" in info.value.reason
    assert "re-save it from Word as .docx" in info.value.reason
    assert "\n" not in str(info.value)


def test_docx_with_corrupt_compressed_bytes_is_a_clear_transcript_error(tmp_path):
    path = docx_with_damaged_compressed_bytes(tmp_path / "HOL-02.docx")
    with pytest.raises(TranscriptError) as info:
        read_docx_text(path)
    assert "damaged" in info.value.reason and "zlib.error" in info.value.reason
    assert "re-save it from Word as .docx" in info.value.reason


# --------------------------------------------------------------------------- front matter

def test_yaml_alias_bomb_in_front_matter_is_refused_at_once():
    assert len(ALIAS_BOMB) < 400
    started = time.perf_counter()
    with pytest.raises(TranscriptError) as info:
        split_front_matter(f"---\ncouncil: Fenley\n{ALIAS_BOMB}\n---\nR: hello\n", "bomb.md")
    assert time.perf_counter() - started < 1
    assert "anchors or aliases" in info.value.reason and "line 3" in info.value.reason
    assert str(info.value).startswith("bomb.md: front matter")


def test_a_lone_yaml_anchor_is_refused_too():
    with pytest.raises(TranscriptError, match="anchors or aliases"):
        split_front_matter("---\ncouncil: &c Fenley\n---\nR: hello\n", "a.md")


def test_front_matter_over_64_kb_is_refused():
    padding = "".join(f"note_{i}: {'x' * 60}\n" for i in range(1100))
    with pytest.raises(TranscriptError) as info:
        split_front_matter(f"---\ncouncil: Fenley\n{padding}---\nR: hello\n", "big.md")
    assert "front matter is" in info.value.reason and "64 KB" in info.value.reason


def test_front_matter_with_an_impossible_date_is_a_clear_transcript_error():
    with pytest.raises(TranscriptError) as info:
        split_front_matter("---\ncouncil: Fenley\ndate: 2026-13-45\n---\nR: hello\n", "a.md")
    assert "front matter has a value that cannot be read" in info.value.reason


def test_ordinary_front_matter_still_parses():
    meta, body = split_front_matter("---\ncouncil: Fenley\ndate: 2026-03-10\n---\nR: hello\n", "a.md")
    assert (meta["council"], str(meta["date"]), body) == ("Fenley", "2026-03-10", "R: hello\n")


# --------------------------------------------------------------------------- mojibake

def test_latin9_euro_is_refused_with_save_as_utf8_advice():
    data = "Respondent: the scheme cost €5m and saved €2m.\n".encode("iso8859_15")
    assert data.decode("cp1252") == "Respondent: the scheme cost ¤5m and saved ¤2m.\n"  # what was stored before
    with pytest.raises(TranscriptError) as info:
        decode_text(data, "latin9.txt")
    assert "line 1" in info.value.reason and "save it as UTF-8" in info.value.reason


def test_latin2_name_is_refused_without_quoting_it():
    data = "Interviewer: Who led it?\nRespondent: Dr Wiśniewska from Łódź.\n".encode("iso8859_2")
    assert "Wi¶niewska" in data.decode("cp1252")
    with pytest.raises(TranscriptError) as info:
        decode_text(data, "latin2.txt")
    assert "line 2" in info.value.reason and "save it as UTF-8" in info.value.reason
    assert "niewska" not in str(info.value)


@pytest.mark.parametrize("text", [
    "Respondent: the café cost £5m – “worth it”, it’s fair to say.",
    "Respondent: 1½ years, ±5% either way, 20°C in the office, 100 m² and © the council.",
    "Respondent: the naïve rôle of the déjà vu crowd; manœuvre; Œuvre; Müller and Søren.",
    "Respondent: don´t ask (an acute accent typed as an apostrophe).",
])
def test_ordinary_windows_1252_text_is_accepted(text):
    assert decode_text(text.encode("cp1252"), "a.txt") == text


def test_sample_round_saved_as_windows_1252_is_accepted(tmp_path):
    """Each shipped sample as Word would save it in Windows-1252: curly quotes, dashes, pounds and accents."""
    for path in sorted(SAMPLE_ROUND.glob("*.md")) + sorted(SAMPLE_ROUND.glob("*.txt")):
        text = path.read_text(encoding="utf-8").replace("'", "’").replace(" - ", " – ").replace("cafe", "café")
        text += "\nRespondent: it cost £5m, a naïve rôle – “worth it”.\n"
        assert decode_text(text.encode("cp1252"), path.name) == text, path.name


# --------------------------------------------------------------------------- warnings and did-you-mean

@pytest.mark.parametrize("key, meant", [
    ("councl", "council"), ("Council", "council"), ("interviewid", "interview_id"), ("Interview ID", "interview_id"),
    ("respondant_role", "respondent_role"), ("rounds", "round"), ("dte", "date"), ("council type", "council_type"),
])
def test_suggest_key_finds_the_metadata_field_meant(key, meant):
    assert suggest_key(key) == meant


@pytest.mark.parametrize("key", ["colour", "notes", "id", "name", "transcriber"])
def test_suggest_key_suggests_nothing_for_unrelated_keys(key):
    assert suggest_key(key) is None


def test_manifest_unknown_column_suggests_the_column_meant(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,councl,colour\nA.txt,Fenley,red\n", encoding="utf-8")
    with pytest.raises(RoundError) as info:
        read_manifest(tmp_path)
    assert "unknown column(s) colour, councl (did you mean 'council'?)" in str(info.value)


def test_symlink_to_a_file_outside_the_round_is_not_followed_and_warned(tmp_path):
    round_dir, elsewhere = tmp_path / "round", tmp_path / "elsewhere"
    round_dir.mkdir()
    elsewhere.mkdir()
    (elsewhere / "private.md").write_text(md("Fenley", "F9", "I: q?\nR: a.\n"), encoding="utf-8")
    (round_dir / "linked.md").symlink_to(elsewhere / "private.md")
    (round_dir / "gone.md").symlink_to(tmp_path / "deleted.md")
    (round_dir / "a.md").write_text(md("Fenley", "F1", "I: q?\nR: a.\n"), encoding="utf-8")
    (round_dir / "also-a.md").symlink_to(round_dir / "a.md")

    assert [p.name for p in list_transcript_files(round_dir)] == ["a.md", "also-a.md"]
    transcripts, _ = read_round(round_dir)
    assert [t.source for t in transcripts] == ["a.md"]
    warnings = round_warnings(round_dir)
    assert any(w.startswith("linked.md: is a link to a file outside the round folder; not read") for w in warnings)
    assert any(w.startswith("gone.md: is a link to a file that does not exist") for w in warnings)
    assert not any("elsewhere" in w or "private" in w for w in warnings)


def test_manifest_rows_for_missing_files_are_warned_naming_the_line(tmp_path):
    (tmp_path / "FEN-03.txt").write_text("I: q?\nR: a.\n", encoding="utf-8")
    (tmp_path / "manifest.csv").write_text(
        "file,council\nFEN-03.txt,Fenley\n\nFEN-04.txt,Fenley\nfen-03.TXT,Fenley\nFEN-03.docx,Fenley\n", encoding="utf-8")
    warnings = round_warnings(tmp_path)
    assert f"{tmp_path / 'manifest.csv'}, line 4: names 'FEN-04.txt', which is not a transcript in the round " \
           "folder; correct the name or delete the row" in warnings
    assert any(w.startswith(f"{tmp_path / 'manifest.csv'}, line 5: names 'fen-03.TXT'")
               and "did you mean 'FEN-03.txt'?" in w for w in warnings)
    assert any(w.startswith(f"{tmp_path / 'manifest.csv'}, line 6: names 'FEN-03.docx'")
               and "did you mean 'FEN-03.txt'?" in w for w in warnings)
    assert len(warnings) == 3


def test_a_round_folder_with_no_transcripts_is_a_warning_in_the_ingest_report(tmp_path, settings):
    empty = tmp_path / "empty-round"
    empty.mkdir()
    (empty / "notes.pdf").write_bytes(b"%PDF-1.4")
    report = steps.ingest_round(empty, settings, steps.new_run_id())
    assert report.files_seen == 0
    assert report.warnings == [f"{empty} holds no transcripts (.docx, .md, .txt files directly in the folder)"]
    assert steps.ingest_report_dict(report)["warnings"] == report.warnings


# --------------------------------------------------------------------------- the file boundary

def test_an_unforeseen_failure_in_one_file_quarantines_it_with_the_log_named(tmp_path, settings):
    round_dir = tmp_path / "round"
    round_dir.mkdir()
    not_a_word_body(round_dir / "HOL-02.docx")
    run_id = steps.new_run_id()
    report = steps.ingest_round(round_dir, settings, run_id)
    [item] = report.quarantined
    log_file = settings.db_path.parent / "logs" / f"ingest-{run_id}.log"
    assert item.reason == f"could not be processed (AttributeError); the full error is in {log_file}"
    logged = log_file.read_text(encoding="utf-8")
    assert "HOL-02.docx: AttributeError" in logged and "Traceback" in logged and "read_docx_text" in logged
    assert "kept" not in logged  # the file's text never reaches the log


def test_bad_files_never_stop_a_round(small_round, settings, run_steps):
    truncated_document_xml(small_round / "HOL-05.docx")
    docx_with_damaged_compressed_bytes(small_round / "HOL-06.docx")
    not_a_word_body(small_round / "HOL-07.docx")
    (small_round / "bomb.md").write_text(md("Fenley", "F-BOMB", "I: q?\nR: a.\n", ALIAS_BOMB + "\n"),
                                         encoding="utf-8")
    (small_round / "latin9.txt").write_bytes(md("Fenley", "F-EURO", "I: Cost?\nR: About €5m.\n").encode("iso8859_15"))
    one_line = "Respondent: " + ANSWER * 13000 + "Mr Smith agreed.\n"  # over 1,000,000 characters on one line
    (small_round / "one-line.md").write_text(md("Fenley", "F-LINE", "Interviewer: And?\n" + one_line),
                                             encoding="utf-8")
    long_turn = "Respondent: " + (ANSWER * 5 + "\n") * 2600  # over 1,000,000 characters in one turn
    assert len(long_turn) > 1_000_000 and len(one_line) > 1_000_000
    (small_round / "long-turn.md").write_text(md("Fenley", "F-LONG", "Interviewer: Tell me all.\n" + long_turn),
                                              encoding="utf-8")

    ingest, embed, code, exports = run_steps(small_round, settings)

    reasons = {q.source: q.reason for q in ingest.quarantined}
    assert sorted(reasons) == ["HOL-05.docx", "HOL-06.docx", "HOL-07.docx", "bomb.md", "latin9.txt", "one-line.md"]
    assert "damaged" in reasons["HOL-05.docx"] and "damaged" in reasons["HOL-06.docx"]
    assert reasons["HOL-07.docx"].startswith("could not be processed (AttributeError); the full error is in ")
    assert "anchors or aliases" in reasons["bomb.md"]
    assert "save it as UTF-8" in reasons["latin9.txt"]
    assert "line 6" in reasons["one-line.md"] and "break it into paragraphs" in reasons["one-line.md"]
    assert all("\n" not in reason for reason in reasons.values())
    assert sorted(ingest.new) == ["FEN-03.txt", "HOL-02.docx", "WMC-01.md", "long-turn.md"]
    [(long_passages,)] = query(settings, "SELECT count(*) FROM passages WHERE transcript_key = 'fenley/F-LONG'")
    assert long_passages == 2600 * 5 // 3 + 1  # every sentence of the long turn is in a passage
    assert code["coded"] == embed["passages"] > long_passages


def test_qcode_run_and_qcode_nightly_print_the_round_warnings(prefect_harness, tmp_path):
    round_dir, elsewhere, empty = tmp_path / "round", tmp_path / "elsewhere", tmp_path / "empty"
    for folder in (round_dir, elsewhere, empty):
        folder.mkdir()
    shutil.copy(SAMPLE_ROUND / "FEN-03.txt", round_dir / "FEN-03.txt")
    (round_dir / "manifest.csv").write_text(
        (SAMPLE_ROUND / "manifest.csv").read_text(encoding="utf-8") + "FEN-09.txt,Fenley,district,FEN-09,,,\n",
        encoding="utf-8")
    shutil.copy(SAMPLE_ROUND / "WMC-01.md", elsewhere / "WMC-01.md")
    (round_dir / "WMC-01.md").symlink_to(elsewhere / "WMC-01.md")
    manifest_warning = f"warning: {round_dir / 'manifest.csv'}, line 3: names 'FEN-09.txt'"
    link_warning = "warning: WMC-01.md: is a link to a file outside the round folder; not read"

    run = CliRunner().invoke(main, ["run", str(round_dir), "--db", str(tmp_path / "q.duckdb"),
                                    "--out", str(tmp_path / "reports")])

    assert run.exit_code == 0, run.output
    assert manifest_warning in run.output and link_warning in run.output
    assert run.output.strip().splitlines()[-1].startswith("1 files (1 new, 0 changed, 0 unchanged), 0 quarantined")
    config = tmp_path / "qcode.toml"
    config.write_text('[qcode]\ndatabase = "q.duckdb"\nreports = "reports"\n[nightly]\nrounds = ["round", "empty"]\n',
                      encoding="utf-8")

    nightly = CliRunner().invoke(main, ["nightly", "--config", str(config)])

    assert nightly.exit_code == 0, nightly.output
    assert manifest_warning in nightly.output and link_warning in nightly.output
    assert f"warning: {empty} holds no transcripts" in nightly.output
    report = json.loads((tmp_path / "reports" / "run-report.json").read_text(encoding="utf-8"))
    assert len(report["ingest"]["warnings"]) == 3
