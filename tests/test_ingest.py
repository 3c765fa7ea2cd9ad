"""pipeline/ingest.py: decoding, front matter, manifest, round folders and speaker turns, on real files."""

from __future__ import annotations

import os
from pathlib import Path

import docx
import pytest

from pipeline.config import Settings
from pipeline.errors import RoundError, TranscriptError
from pipeline.ingest import (
    GateMemo,
    decode_text,
    list_transcript_files,
    read_known_names,
    read_manifest,
    read_round,
    read_transcript,
    split_front_matter,
    split_turns,
)
from pipeline.schemas import INTERVIEWER, RESPONDENT

INTERVIEWER_LABELS = Settings().interviewer_labels
RESPONDENT_LABELS = Settings().respondent_labels

MD_TRANSCRIPT = """---
council: Westmarch
council_type: county
interview_id: WMC-09
respondent_role: chief executive
round: 2026-spring
date: 2026-03-10
---

Interviewer: What changed first?

Respondent: We pooled the budgets with health. It took a year.
"""

TXT_BODY = "I: What held you back?\nR: Mostly the procurement rules.\n"


def write_docx(path: Path, paragraphs: list[str]) -> Path:
    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    document.save(str(path))
    return path


def turns_of(text: str, **kwargs):
    return split_turns(text, INTERVIEWER_LABELS, RESPONDENT_LABELS, **kwargs)


# --------------------------------------------------------------------------- decode_text

def test_decode_utf8():
    assert decode_text("café – “quoted” £5".encode("utf-8"), "a.txt") == "café – “quoted” £5"


def test_decode_utf8_with_bom_drops_the_bom():
    text = decode_text(b"\xef\xbb\xbf" + "Respondent: café".encode("utf-8"), "a.txt")
    assert text == "Respondent: café"
    assert not text.startswith("\ufeff")


def test_decode_windows_1252_cafe_and_curly_quotes():
    original = "Respondent: the café said “yes” – it’s £5"
    data = original.encode("cp1252")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # the input really is not UTF-8
    assert decode_text(data, "a.txt") == original


def test_decode_normalises_windows_and_old_mac_line_endings():
    assert decode_text(b"one\r\ntwo\rthree\n", "a.txt") == "one\ntwo\nthree\n"


def test_decode_nul_bytes_raise_transcript_error_naming_the_file(tmp_path):
    path = tmp_path / "interview.txt"
    with pytest.raises(TranscriptError) as info:
        decode_text(b"R: hello\x00\x01\x02binary", path)
    assert str(info.value).startswith("interview.txt: ")
    assert "not a text file" in info.value.reason
    assert "UTF-8" in info.value.reason
    assert info.value.path == path


def test_decode_utf16_text_is_rejected_with_advice():
    with pytest.raises(TranscriptError) as info:
        decode_text("Respondent: hello".encode("utf-16"), "word-export.txt")
    assert "word-export.txt" in str(info.value)
    assert "UTF-16" in info.value.reason


def test_decode_control_characters_are_rejected():
    with pytest.raises(TranscriptError) as info:
        decode_text(b"R: hello\x07 there", "beep.txt")
    assert str(info.value).startswith("beep.txt: ")
    assert "control characters" in info.value.reason
    assert "save it as UTF-8" in info.value.reason


def test_decode_tabs_and_form_feeds_are_allowed():
    assert decode_text(b"R:\thello\x0cthere", "a.txt") == "R:\thello\x0cthere"


def test_decode_bytes_undefined_in_cp1252_are_rejected():
    with pytest.raises(TranscriptError) as info:
        decode_text(b"caf\x81\x8d", "odd.txt")
    assert "odd.txt" in str(info.value)
    assert "neither UTF-8 nor Windows-1252" in info.value.reason


# --------------------------------------------------------------------------- front matter

def test_front_matter_is_parsed_and_keys_lowercased():
    meta, body = split_front_matter("---\nCouncil: Westmarch\nInterview_ID: W1\n---\nInterviewer: hi\n", "a.md")
    assert meta == {"council": "Westmarch", "interview_id": "W1"}
    assert body == "Interviewer: hi\n"


def test_no_front_matter_returns_text_unchanged():
    text = "Interviewer: hi\n---\nRespondent: ok\n"
    assert split_front_matter(text, "a.md") == ({}, text)


def test_invalid_front_matter_yaml_names_file_and_front_matter(tmp_path):
    with pytest.raises(TranscriptError) as info:
        split_front_matter("---\ncouncil: [Westmarch\ninterview_id: W1\n---\nbody\n", tmp_path / "bad.md")
    message = str(info.value)
    assert message.startswith("bad.md: ")
    assert "front matter is not valid YAML at line" in message
    assert "'---' block" in message


def test_front_matter_that_is_not_a_mapping_is_rejected():
    with pytest.raises(TranscriptError) as info:
        split_front_matter("---\n- just\n- a list\n---\nbody\n", "list.md")
    assert "list.md" in str(info.value)
    assert "front matter must be 'key: value' lines" in info.value.reason


# --------------------------------------------------------------------------- read_transcript

def test_read_md_with_front_matter(tmp_path):
    path = tmp_path / "WMC-09.md"
    path.write_text(MD_TRANSCRIPT, encoding="utf-8")
    t = read_transcript(path)
    assert t.source == "WMC-09.md"
    assert t.meta.council == "Westmarch"
    assert t.meta.council_type == "county"
    assert t.meta.interview_id == "WMC-09"
    assert t.meta.respondent_role == "chief executive"
    assert t.meta.round == "2026-spring"
    assert t.meta.date == "2026-03-10"  # YAML reads a date; it is stored as ISO text
    assert t.meta.key == "westmarch/WMC-09"
    assert "council:" not in t.text
    assert t.text.strip().startswith("Interviewer: What changed first?")


def test_read_txt_with_metadata_from_manifest_row(tmp_path):
    path = tmp_path / "FEN-07.txt"
    path.write_bytes(TXT_BODY.encode("cp1252"))
    t = read_transcript(path, {"council": "Fenley", "council_type": "district", "respondent_role": "politician"})
    assert t.meta.council == "Fenley"
    assert t.meta.council_type == "district"
    assert t.meta.respondent_role == "politician"
    assert t.meta.interview_id == "FEN-07"  # defaults to the file name without suffix
    assert t.text == TXT_BODY


def test_front_matter_wins_over_manifest_row(tmp_path):
    path = tmp_path / "x.md"
    path.write_text("---\ncouncil: Irewell\n---\nI: q\nR: a\n", encoding="utf-8")
    t = read_transcript(path, {"council": "Fenley", "round": "2026-spring"})
    assert t.meta.council == "Irewell"
    assert t.meta.round == "2026-spring"


def test_read_docx_built_with_python_docx(tmp_path):
    path = write_docx(tmp_path / "HOL-09.docx", [
        "---", "council: Hollins Vale", "interview_id: HOL-09", "---",
        "Interviewer: How did the café project start?",
        "Respondent: A frontline idea, honestly.",
    ])
    t = read_transcript(path)
    assert t.source == "HOL-09.docx"
    assert t.meta.council == "Hollins Vale"
    assert t.meta.key == "hollins-vale/HOL-09"
    assert t.text == "Interviewer: How did the café project start?\nRespondent: A frontline idea, honestly."


def test_docx_metadata_can_come_from_manifest(tmp_path):
    path = write_docx(tmp_path / "CAL-05.docx", ["I: Why?", "R: Because."])
    t = read_transcript(path, {"council": "Calderbridge"})
    assert (t.meta.council, t.meta.interview_id) == ("Calderbridge", "CAL-05")


def test_corrupt_docx_random_bytes_gives_clear_error(tmp_path):
    path = tmp_path / "broken.docx"
    path.write_bytes(os.urandom(2048))
    with pytest.raises(TranscriptError) as info:
        read_transcript(path, {"council": "Fenley"})
    message = str(info.value)
    assert message.startswith("broken.docx: ")
    assert "cannot be opened as a Word document" in message
    assert "re-save it from Word as .docx" in message


def test_zip_that_is_not_a_word_document_gives_clear_error(tmp_path):
    import zipfile

    path = tmp_path / "renamed.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a word document")
    with pytest.raises(TranscriptError) as info:
        read_transcript(path, {"council": "Fenley"})
    assert str(info.value).startswith("renamed.docx: cannot be opened as a Word document")


def test_empty_file_is_empty(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(TranscriptError) as info:
        read_transcript(path, {"council": "Fenley"})
    assert str(info.value) == "empty.txt: is empty (no transcript text after the front matter)"


def test_front_matter_only_is_empty(tmp_path):
    path = tmp_path / "header-only.md"
    path.write_text("---\ncouncil: Fenley\n---\n\n   \n", encoding="utf-8")
    with pytest.raises(TranscriptError) as info:
        read_transcript(path)
    assert "header-only.md" in str(info.value)
    assert "is empty" in info.value.reason


def test_missing_council_mentions_manifest(tmp_path):
    path = tmp_path / "orphan.txt"
    path.write_text(TXT_BODY, encoding="utf-8")
    with pytest.raises(TranscriptError) as info:
        read_transcript(path)
    message = str(info.value)
    assert message.startswith("orphan.txt: has no council")
    assert "manifest.csv" in message
    assert "'council:'" in message


# --------------------------------------------------------------------------- manifest

def test_manifest_comma_delimited(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        "file,council,council_type,interview_id\nFEN-03.txt,Fenley,district,FEN-03\nX.txt, Irewell ,,\n",
        encoding="utf-8")
    assert read_manifest(tmp_path) == {
        "FEN-03.txt": {"council": "Fenley", "council_type": "district", "interview_id": "FEN-03"},
        "X.txt": {"council": "Irewell"},
    }


def test_manifest_semicolon_delimited_with_bom_and_capitalised_headers(tmp_path):
    (tmp_path / "manifest.csv").write_bytes(
        b"\xef\xbb\xbfFile;Council;Interview_ID\nFEN-03.txt;Fenley;FEN-03\nA.txt;Caf\xc3\xa9 Town;A-1\n")
    assert read_manifest(tmp_path) == {
        "FEN-03.txt": {"council": "Fenley", "interview_id": "FEN-03"},
        "A.txt": {"council": "Café Town", "interview_id": "A-1"},
    }


def test_manifest_absent_is_empty(tmp_path):
    assert read_manifest(tmp_path) == {}


def test_manifest_without_file_column_names_the_file(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("council,interview_id\nFenley,FEN-03\n", encoding="utf-8")
    with pytest.raises(RoundError) as info:
        read_manifest(tmp_path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "needs a 'file' column" in message
    assert "found columns: council, interview_id" in message


def test_manifest_unknown_column_is_named(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("file,council,colour\nA.txt,Fenley,red\n", encoding="utf-8")
    with pytest.raises(RoundError) as info:
        read_manifest(tmp_path)
    message = str(info.value)
    assert str(path) in message
    assert "unknown column(s) colour" in message
    assert "allowed: file, council" in message


def test_manifest_duplicate_file_names_the_line(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("file,council\nA.txt,Fenley\nB.txt,Irewell\nA.txt,Westmarch\n", encoding="utf-8")
    with pytest.raises(RoundError) as info:
        read_manifest(tmp_path)
    assert str(info.value) == f"{path}, line 4: file 'A.txt' is listed twice; keep one row per file"


def test_manifest_duplicate_line_number_counts_blank_lines(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("file,council\n\nA.txt,Fenley\n\nA.txt,Westmarch\n", encoding="utf-8")
    with pytest.raises(RoundError) as info:
        read_manifest(tmp_path)
    assert f"{path}, line 5: file 'A.txt' is listed twice" in str(info.value)


def test_manifest_empty_file_cell_names_the_line(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("file,council\nA.txt,Fenley\n,Irewell\n", encoding="utf-8")
    with pytest.raises(RoundError) as info:
        read_manifest(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 3: the 'file' cell is empty")
    assert "delete the row" in message


def test_binary_manifest_is_a_round_error_naming_it(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(RoundError) as info:
        read_manifest(tmp_path)
    assert str(info.value).startswith(f"{path}: is not a text file")


# --------------------------------------------------------------------------- known names, listing

def test_read_known_names_skips_comments_and_blank_lines(tmp_path):
    (tmp_path / "known_names.txt").write_text(
        "# participants\n\nHelen Marsh\n   \n  # indented comment\n  Tom Ridley  \nSíân Llewellyn\n", encoding="utf-8")
    assert read_known_names(tmp_path) == ["Helen Marsh", "Tom Ridley", "Síân Llewellyn"]


def test_read_known_names_absent_is_empty(tmp_path):
    assert read_known_names(tmp_path) == []


def test_list_transcript_files_ignores_side_hidden_and_lock_files(tmp_path):
    for name in ("b.txt", "a.md", "c.DOCX", "manifest.csv", "known_names.txt", "README.md", ".hidden.md",
                 "~$c.docx", "notes.pdf", "data.csv"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    (tmp_path / "sub.md").mkdir()
    assert [p.name for p in list_transcript_files(tmp_path)] == ["a.md", "b.txt", "c.DOCX"]


def test_list_transcript_files_on_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(RoundError) as info:
        list_transcript_files(missing)
    assert str(info.value) == f"{missing} is not a folder; pass the folder that holds the round's transcripts"


# --------------------------------------------------------------------------- read_round

def test_read_round_returns_good_and_quarantines_bad_losing_nothing(tmp_path):
    (tmp_path / "good.md").write_text(MD_TRANSCRIPT, encoding="utf-8")
    (tmp_path / "FEN-07.txt").write_bytes(TXT_BODY.encode("cp1252"))
    write_docx(tmp_path / "HOL-09.docx", ["I: q?", "R: a."])
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02\x03")
    (tmp_path / "broken.docx").write_bytes(os.urandom(512))
    (tmp_path / "nocouncil.md").write_text("I: q\nR: a\n", encoding="utf-8")
    (tmp_path / "badyaml.md").write_text("---\ncouncil: [x\n---\nI: q\nR: a\n", encoding="utf-8")
    (tmp_path / "manifest.csv").write_text(
        "file,council,interview_id\nFEN-07.txt,Fenley,\nHOL-09.docx,Hollins Vale,HOL-09\n", encoding="utf-8")
    (tmp_path / "known_names.txt").write_text("Helen Marsh\n", encoding="utf-8")
    (tmp_path / "~$good.docx").write_bytes(b"lock")

    transcripts, quarantined = read_round(tmp_path)

    assert sorted(t.meta.key for t in transcripts) == ["fenley/FEN-07", "hollins-vale/HOL-09", "westmarch/WMC-09"]
    reasons = {q.source: q.reason for q in quarantined}
    assert sorted(reasons) == ["badyaml.md", "binary.txt", "broken.docx", "empty.txt", "nocouncil.md"]
    assert "is empty" in reasons["empty.txt"]
    assert "not a text file" in reasons["binary.txt"]
    assert "cannot be opened as a Word document" in reasons["broken.docx"]
    assert "has no council" in reasons["nocouncil.md"] and "manifest.csv" in reasons["nocouncil.md"]
    assert "front matter is not valid YAML" in reasons["badyaml.md"]
    listed = {p.name for p in list_transcript_files(tmp_path)}
    assert {t.source for t in transcripts} | set(reasons) == listed
    assert len(transcripts) + len(quarantined) == len(listed) == 8


def test_read_round_duplicate_interview_id_quarantines_the_second(tmp_path):
    (tmp_path / "a.md").write_text("---\ncouncil: Fenley\ninterview_id: F1\n---\nI: q\nR: a\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("I: q\nR: other\n", encoding="utf-8")
    (tmp_path / "manifest.csv").write_text("file,council,interview_id\nb.txt,Fenley,F1\n", encoding="utf-8")
    transcripts, quarantined = read_round(tmp_path)
    assert [t.source for t in transcripts] == ["a.md"]
    assert len(quarantined) == 1
    assert quarantined[0].source == "b.txt"
    assert "same council and interview_id as a.md" in quarantined[0].reason
    assert "give each interview its own interview_id" in quarantined[0].reason


def test_read_round_same_interview_id_in_different_councils_is_fine(tmp_path):
    (tmp_path / "a.md").write_text("---\ncouncil: Fenley\ninterview_id: 01\n---\nI: q\nR: a\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("---\ncouncil: Irewell\ninterview_id: 01\n---\nI: q\nR: a\n", encoding="utf-8")
    transcripts, quarantined = read_round(tmp_path)
    assert quarantined == []
    assert [t.meta.council for t in transcripts] == ["Fenley", "Irewell"]


def test_read_round_with_broken_manifest_stops_the_round(tmp_path):
    (tmp_path / "a.md").write_text(MD_TRANSCRIPT, encoding="utf-8")
    (tmp_path / "manifest.csv").write_text("name,council\na.md,Fenley\n", encoding="utf-8")
    with pytest.raises(RoundError) as info:
        read_round(tmp_path)
    assert "manifest.csv: needs a 'file' column" in str(info.value)


def test_read_round_on_the_shipped_sample_files(small_round):
    transcripts, quarantined = read_round(small_round)
    assert quarantined == []
    assert sorted(t.meta.key for t in transcripts) == ["fenley/FEN-03", "hollins-vale/HOL-02", "westmarch/WMC-01"]
    fen = next(t for t in transcripts if t.source == "FEN-03.txt")
    assert (fen.meta.council_type, fen.meta.respondent_role, fen.meta.date) == ("district", "politician", "2026-04-03")


def memo_round(round_dir: Path) -> Path:
    """Files whose names and metadata the gate finds things in: a titled name, a known name, an unknown key."""
    round_dir.mkdir()
    (round_dir / "known_names.txt").write_text("Helen Marsh\n", encoding="utf-8")
    (round_dir / "WMC-09.md").write_text(MD_TRANSCRIPT, encoding="utf-8")
    (round_dir / "Dr Esme Ravensworth.md").write_text(
        "---\ncouncil: Fenley\nrespondent_role: officer seconded to Marsh Vale\ninterviewer: Helen Marsh\n---\n"
        "I: What changed?\nR: The budgets.\n", encoding="utf-8")
    (round_dir / "FEN-07.txt").write_text(TXT_BODY, encoding="utf-8")
    (round_dir / "manifest.csv").write_text("file,council,respondent_role\nFEN-07.txt,Fenley,Cllr Jo Bell's deputy\n",
                                            encoding="utf-8")
    return round_dir


def test_read_round_with_a_memo_gates_no_unchanged_file_and_gives_the_same_transcripts(tmp_path, gate_spy):
    round_dir = memo_round(tmp_path / "round")
    fresh = read_round(round_dir)
    memo = GateMemo()
    assert read_round(round_dir, memo=memo) == fresh
    assert any(t.findings for t in fresh[0]) and any(t.dropped_keys for t in fresh[0])
    gate_spy.reset()

    again = read_round(round_dir, memo=GateMemo(memo.kept))

    assert again == fresh and gate_spy.files == [] and gate_spy.model_loads == 0


def test_read_round_with_a_memo_regates_what_a_change_could_gate_otherwise(tmp_path, gate_spy):
    round_dir = memo_round(tmp_path / "round")
    memo = GateMemo()
    read_round(round_dir, memo=memo)

    def regated() -> list[str]:
        nonlocal memo
        gate_spy.reset()
        memo = GateMemo(memo.kept)
        result = read_round(round_dir, memo=memo)
        gated = sorted(gate_spy.files)
        assert result == read_round(round_dir)  # what gating every file gives
        return gated

    (round_dir / "manifest.csv").write_text("file,council,respondent_role\nFEN-07.txt,Fenley,Cllr Jo Bell\n",
                                            encoding="utf-8")
    assert regated() == ["FEN-07.txt"]  # its manifest row changed
    (round_dir / "WMC-09.md").write_text(MD_TRANSCRIPT.replace("pooled", "shared"), encoding="utf-8")
    assert regated() == ["WMC-09.md"]  # its bytes changed
    (round_dir / "HOL-01.md").write_text("---\ncouncil: Hollins Vale\n---\nI: q?\nR: a.\n", encoding="utf-8")
    assert regated() == ["HOL-01.md"]  # a new file from a new council
    (round_dir / "MV-01.md").write_text("---\ncouncil: Marsh Vale\n---\nI: q?\nR: a.\n", encoding="utf-8")
    # a new council named in another file's metadata: that file is gated again, with the council allowed
    assert regated() == ["Dr Esme Ravensworth.md", "MV-01.md"]
    (round_dir / "known_names.txt").write_text("Helen Marsh\nJo Bell\n", encoding="utf-8")
    assert len(regated()) == 5  # the gate itself changed


# --------------------------------------------------------------------------- split_turns

@pytest.mark.parametrize("interviewer, respondent", [
    ("Interviewer", "Respondent"),
    ("I", "R"),
    ("Q", "A"),
    ("Interviewer", "P1"),
    ("Int", "Chief Executive"),
    ("**Interviewer**", "**Respondent 2**"),
])
def test_split_turns_label_styles(interviewer, respondent):
    text = f"{interviewer}: Why did it work?\n{respondent}: Because we asked residents.\n"
    turns = turns_of(text)
    assert [t.role for t in turns] == [INTERVIEWER, RESPONDENT]
    assert [t.text for t in turns] == ["Why did it work?", "Because we asked residents."]
    assert [t.index for t in turns] == [0, 1]
    assert turns[1].speaker == respondent.strip("*")


def test_split_turns_numbered_respondents_are_separate_turns():
    text = "Interviewer: Who led it?\nRespondent 1: The leader.\nRespondent 2: No, the chief exec.\nR3: Both.\n"
    turns = turns_of(text)
    assert [(t.speaker, t.role, t.text) for t in turns] == [
        ("Interviewer", INTERVIEWER, "Who led it?"),
        ("Respondent 1", RESPONDENT, "The leader."),
        ("Respondent 2", RESPONDENT, "No, the chief exec."),
        ("R3", RESPONDENT, "Both."),
    ]


def test_split_turns_markdown_bold_colon_inside():
    turns = turns_of("**Q:** Why?\n**A:** Because.")
    assert [(t.speaker, t.role, t.text) for t in turns] == [("Q", INTERVIEWER, "Why?"), ("A", RESPONDENT, "Because.")]


def test_split_turns_continuation_lines_join_the_turn_and_offsets_map_back():
    text = ("Title line that is not a turn\n\n"
            "Interviewer: First question?\n\n"
            "Chief Executive: Well, it started in 2019.\n"
            "Then we pooled budgets: health and care.\n\n"
            "Note: this line is inside the answer.\n"
            "P1: A participant code counts as a respondent.\n"
            "Q:   Short one?   \n"
            "A: Yes.\n")
    turns = turns_of(text)
    assert [(t.speaker, t.role) for t in turns] == [
        ("Interviewer", INTERVIEWER), ("Chief Executive", RESPONDENT), ("P1", RESPONDENT),
        ("Q", INTERVIEWER), ("A", RESPONDENT)]
    assert turns[1].text == ("Well, it started in 2019.\nThen we pooled budgets: health and care.\n\n"
                             "Note: this line is inside the answer.")
    assert turns[3].text == "Short one?"
    for t in turns:
        assert text[t.start:t.end] == t.text
    assert all(t.role == INTERVIEWER for t in turns if t.speaker in ("Interviewer", "Q"))


def test_split_turns_skips_empty_turns():
    turns = turns_of("Interviewer:\nRespondent: Only this.\n")
    assert [(t.index, t.role, t.text) for t in turns] == [(0, RESPONDENT, "Only this.")]


def test_split_turns_with_configured_custom_labels():
    text = "Researcher: What helped?\nHead of Service: Trust.\nResearcher: And?\nHead of Service: Money.\n"
    turns = split_turns(text, ["researcher"], ["head of service"])
    assert [(t.speaker, t.role, t.text) for t in turns] == [
        ("Researcher", INTERVIEWER, "What helped?"), ("Head of Service", RESPONDENT, "Trust."),
        ("Researcher", INTERVIEWER, "And?"), ("Head of Service", RESPONDENT, "Money.")]
    with pytest.raises(TranscriptError):  # the default labels don't know these speakers
        turns_of(text)


def test_split_turns_no_labels_gives_advice():
    with pytest.raises(TranscriptError) as info:
        turns_of("We talked about budgets.\nThen about housing.\n", source="FEN-09.txt")
    message = str(info.value)
    assert message.startswith("FEN-09.txt: has no speaker turns")
    assert "'Interviewer:' or 'Respondent:'" in message
    assert "configured" in message


def test_split_turns_interviewer_only_is_an_error():
    with pytest.raises(TranscriptError) as info:
        turns_of("Interviewer: Hello?\nInterviewer: Anyone there?\n", source="solo.md")
    message = str(info.value)
    assert message.startswith("solo.md: has no respondent turns")
    assert "check the speaker labels" in message


def test_split_turns_on_a_read_transcript_maps_into_its_text(tmp_path):
    path = tmp_path / "WMC-09.md"
    path.write_text(MD_TRANSCRIPT, encoding="utf-8")
    t = read_transcript(path)
    turns = turns_of(t.text, source=t.source)
    assert [t_.text for t_ in turns] == ["What changed first?", "We pooled the budgets with health. It took a year."]
    assert all(t.text[x.start:x.end] == x.text for x in turns)
