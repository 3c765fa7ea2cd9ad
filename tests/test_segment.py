"""pipeline/segment.py: sentence grouping, token budgets with the real tokenizer, offsets and stable passage ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import PROJECT_ROOT, Settings
from pipeline.ingest import read_transcript, split_turns
from pipeline.schemas import INTERVIEWER, RESPONDENT
from pipeline.segment import group_sentences, segment_turns, sentence_spans

SETTINGS = Settings()

ANSWER = ("We pooled the budgets with health in 2019. It took a year to agree the governance. "
          "The leader backed it from the start. Officers were nervous, honestly. "
          "But the results spoke for themselves. Delayed discharges fell by a third.")


def write_interview(folder: Path, name: str, body: str, *, council: str = "Westmarch",
                    interview_id: str = "WMC-09") -> Path:
    path = folder / name
    path.write_text(f"---\ncouncil: {council}\ninterview_id: {interview_id}\n---\n{body}", encoding="utf-8")
    return path


def segment_file(path: Path, **kwargs):
    transcript = read_transcript(path)
    turns = split_turns(transcript.text, SETTINGS.interviewer_labels, SETTINGS.respondent_labels,
                        source=transcript.source)
    return transcript, turns, segment_turns(transcript, turns, **kwargs)


# --------------------------------------------------------------------------- sentences and groups

def test_sentence_spans_are_trimmed_and_map_back():
    text = "  One here.   Two there!\nThree? "
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == ["One here.", "Two there!", "Three?"]


def test_groups_hold_at_most_three_sentences():
    text = "One. Two. Three. Four. Five. Six. Seven."
    assert [text[s:e] for s, e in group_sentences(text)] == ["One. Two. Three.", "Four. Five. Six.", "Seven."]


def test_max_sentences_is_configurable():
    text = "One. Two. Three. Four. Five."
    assert [text[s:e] for s, e in group_sentences(text, max_sentences=2)] == ["One. Two.", "Three. Four.", "Five."]
    assert [text[s:e] for s, e in group_sentences(text, max_sentences=1)] == [
        "One.", "Two.", "Three.", "Four.", "Five."]


def test_a_turn_longer_than_spacys_limit_is_split_into_every_sentence():
    # One line of 15,000 sentences (1,170,000 characters): spaCy alone refuses anything over 1,000,000.
    sentence = "We pooled the budgets with health and it took a year to agree the governance. "
    text = sentence * 15000
    spans = sentence_spans(text)
    assert len(spans) == 15000
    assert all(text[s:e] == sentence.strip() for s, e in spans)
    assert [text[s:e] for s, e in group_sentences(text)][-1] == (sentence * 3).strip()


def test_a_long_turn_without_sentence_ends_is_cut_at_white_space():
    text = "word " * 250_000  # 1,250,000 characters and no full stop anywhere
    spans = sentence_spans(text)
    assert "".join(text[s:e] + " " for s, e in spans) == text  # nothing lost, no word cut in two
    assert max(e - s for s, e in spans) <= 100_000


def test_a_long_turn_is_not_cut_after_a_title_such_as_mr():
    # The only full stop in the second half of the first 100,000 characters follows "Mr".
    text = "word " * 11000 + "so I met Mr. Jones " + "word " * 10000 + "end."
    spans = sentence_spans(text)
    assert not any(text[s:e].endswith("Mr.") for s, e in spans)
    assert "".join(text[s:e] + " " for s, e in spans).strip() == text


def test_a_long_turn_in_a_transcript_keeps_offsets_into_the_transcript(tmp_path):
    paragraph = "The leader backed it from the start. Officers were nervous, honestly.\n"
    path = write_interview(tmp_path, "long.md", "Interviewer: Tell me all.\nRespondent: " + paragraph * 15000)
    transcript, _, passages = segment_file(path)
    assert len(transcript.text) > 1_000_000
    assert len(passages) == 10000
    assert all(transcript.text[p.start:p.end] == p.text for p in passages)


@pytest.mark.slow
def test_token_budget_respected_with_real_tokenizer(embedder):
    budget = 20
    spans = group_sentences(ANSWER, max_tokens=budget, count_tokens=embedder.count_tokens)
    pieces = [ANSWER[s:e] for s, e in spans]
    assert len(pieces) > 2  # three sentences of this answer do not fit in 20 word pieces
    for piece in pieces:
        assert embedder.count_tokens(piece) <= budget
        assert len(sentence_spans(piece)) <= 3
    assert " ".join(pieces).split() == ANSWER.split()  # nothing dropped, nothing reordered
    # a larger budget packs more sentences together
    wide = group_sentences(ANSWER, max_tokens=250, count_tokens=embedder.count_tokens)
    assert len(wide) == 2
    assert len(wide) < len(spans)


@pytest.mark.slow
def test_very_long_sentence_is_split_under_the_budget(embedder):
    sentence = ("and then the partnership board agreed that the housing association the health trust "
                "the police and the voluntary sector would all pool their budgets for early help " * 4).strip() + "."
    budget = 16
    assert embedder.count_tokens(sentence) > budget
    spans = group_sentences(sentence, max_tokens=budget, count_tokens=embedder.count_tokens)
    pieces = [sentence[s:e] for s, e in spans]
    assert len(pieces) >= 4
    for piece in pieces:
        assert 0 < embedder.count_tokens(piece) <= budget
        assert piece == piece.strip()
    assert " ".join(pieces).split() == sentence.split()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


# --------------------------------------------------------------------------- passages

@pytest.mark.slow
def test_passage_offsets_map_back_into_the_transcript(tmp_path, embedder):
    body = (f"Interviewer: Tell me about it.\n\nRespondent: {ANSWER}\nSecond line of the same answer. "
            "And a third sentence here.\n\nInterviewer: Anything else?\n\nRespondent: No. That's all.\n")
    transcript, turns, passages = segment_file(write_interview(tmp_path, "a.md", body), max_tokens=30,
                                               count_tokens=embedder.count_tokens)
    assert len(passages) >= 4
    for p in passages:
        assert transcript.text[p.start:p.end] == p.text
        assert p.transcript_key == "westmarch/WMC-09"
        turn = turns[p.turn_index]
        assert turn.role == RESPONDENT
        assert p.speaker == turn.speaker == "Respondent"
        assert turn.start <= p.start < p.end <= turn.end
        assert embedder.count_tokens(p.text) <= 30
    assert passages[-1].text == "No. That's all."


def test_interviewer_turns_produce_no_passages(tmp_path):
    body = ("Interviewer: A very long question. With two sentences.\n"
            "Respondent: Short answer.\n"
            "Interviewer: Another question?\n")
    transcript, turns, passages = segment_file(write_interview(tmp_path, "a.md", body))
    assert [t.role for t in turns] == [INTERVIEWER, RESPONDENT, INTERVIEWER]
    assert [(p.turn_index, p.text) for p in passages] == [(1, "Short answer.")]


def test_passage_ids_stable_across_two_reads(tmp_path):
    path = write_interview(tmp_path, "a.md", f"Interviewer: Go on.\nRespondent: {ANSWER}\n")
    first = segment_file(path)[2]
    second = segment_file(path)[2]
    assert [p.passage_id for p in first] == [p.passage_id for p in second]
    assert all(p.passage_id.startswith("p") and len(p.passage_id) == 16 for p in first)
    assert len({p.passage_id for p in first}) == len(first) == 2


def test_passage_ids_stable_across_separate_processes(tmp_path):
    path = write_interview(tmp_path, "a.md", f"Interviewer: Go on.\nRespondent: {ANSWER}\n")
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from pipeline.config import Settings\n"
        "from pipeline.ingest import read_transcript, split_turns\n"
        "from pipeline.segment import segment_turns\n"
        "s = Settings()\n"
        "t = read_transcript(Path(sys.argv[1]))\n"
        "turns = split_turns(t.text, s.interviewer_labels, s.respondent_labels)\n"
        "print(json.dumps([p.passage_id for p in segment_turns(t, turns)]))\n"
    )
    # a fresh interpreter with its own string-hash seed must produce the ids this process does
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, env=env, check=True)
    other_run = json.loads(out.stdout)
    in_process = [p.passage_id for p in segment_file(path)[2]]
    assert other_run == in_process
    assert len(in_process) == 2


def test_passage_ids_independent_of_preceding_interviewer_text(tmp_path):
    short = write_interview(tmp_path, "short.md", f"Interviewer: Go on.\nRespondent: {ANSWER}\n")
    longer = write_interview(tmp_path, "long.md",
                             "Interviewer: A much longer preamble. It has several sentences. And changes offsets.\n"
                             "Interviewer: Then a follow-up question?\n"
                             f"Respondent: {ANSWER}\n")
    a, b = segment_file(short)[2], segment_file(longer)[2]
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.passage_id for p in a] == [p.passage_id for p in b]
    assert [p.start for p in a] != [p.start for p in b]  # the passages really moved


def test_passage_ids_depend_on_the_interview(tmp_path):
    a = segment_file(write_interview(tmp_path, "a.md", f"I: q\nR: {ANSWER}\n", interview_id="X1"))[2]
    b = segment_file(write_interview(tmp_path, "b.md", f"I: q\nR: {ANSWER}\n", interview_id="X2"))[2]
    assert [p.text for p in a] == [p.text for p in b]
    assert not {p.passage_id for p in a} & {p.passage_id for p in b}


def test_identical_text_twice_in_one_interview_gets_distinct_ids(tmp_path):
    body = "I: Did it work?\nR: Yes, it did.\nI: Really?\nR: Yes, it did.\nI: And the cost?\nR: Yes,  it\ndid.\n"
    transcript, _, passages = segment_file(write_interview(tmp_path, "a.md", body))
    assert [" ".join(p.text.split()) for p in passages] == ["Yes, it did."] * 3
    assert len({p.passage_id for p in passages}) == 3
    # rerunning gives the same three ids in the same order
    assert [p.passage_id for p in segment_file(tmp_path / "a.md")[2]] == [p.passage_id for p in passages]
    for p in passages:
        assert transcript.text[p.start:p.end] == p.text


def test_whitespace_only_change_keeps_the_id(tmp_path):
    a = segment_file(write_interview(tmp_path, "a.md", "I: q\nR: We pooled   budgets.\n"))[2]
    b = segment_file(write_interview(tmp_path, "b.md", "I: q\nR: We pooled\nbudgets.\n"))[2]
    assert a[0].text != b[0].text
    assert a[0].passage_id == b[0].passage_id


def test_shipped_sample_segments_cleanly(small_round):
    transcript, turns, passages = segment_file(small_round / "WMC-01.md")
    respondent_turns = {t.index for t in turns if t.role == RESPONDENT}
    assert len(passages) >= len(respondent_turns) > 10
    assert {p.turn_index for p in passages} == respondent_turns
    assert len({p.passage_id for p in passages}) == len(passages)
    assert all(transcript.text[p.start:p.end] == p.text for p in passages)
    assert all(len(sentence_spans(p.text)) <= 3 for p in passages)
