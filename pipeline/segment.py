"""Respondent turns -> passages of 1-3 sentences that the embedding model sees whole."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import lru_cache
from typing import Callable, Iterable

from pipeline.schemas import RESPONDENT, Passage, Transcript, Turn

TokenCounter = Callable[[str], int]


def approximate_tokens(text: str) -> int:
    """Word-piece count estimate for when no tokenizer is at hand (about 1.3 pieces per word)."""
    return int(len(text.split()) * 1.3) + 1


@lru_cache(maxsize=1)
def _sentencizer():
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences in ``text``, trimmed of surrounding white space."""
    doc = _sentencizer()(text)
    spans = []
    for sent in doc.sents:
        start, end = sent.start_char, sent.end_char
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end:
            spans.append((start, end))
    return spans


def _split_long(text: str, start: int, end: int, budget: int, count_tokens: TokenCounter) -> list[tuple[int, int]]:
    """Cut a sentence longer than the budget at word boundaries."""
    pieces: list[tuple[int, int]] = []
    piece: tuple[int, int] | None = None
    for word in re.finditer(r"\S+", text[start:end]):
        word_start, word_end = start + word.start(), start + word.end()
        if piece is None:
            piece = (word_start, word_end)
        elif count_tokens(text[piece[0]:word_end]) <= budget:
            piece = (piece[0], word_end)
        else:
            pieces.append(piece)
            piece = (word_start, word_end)
    if piece:
        pieces.append(piece)
    return pieces


def group_sentences(text: str, *, max_sentences: int = 3, max_tokens: int = 250,
                    count_tokens: TokenCounter = approximate_tokens) -> list[tuple[int, int]]:
    """Greedily pack consecutive sentences into spans of at most ``max_sentences`` within the token budget.

    Examples
    --------
    >>> text = "One. Two. Three. Four."
    >>> [text[s:e] for s, e in group_sentences(text, max_sentences=3)]
    ['One. Two. Three.', 'Four.']
    """
    units: list[tuple[int, int]] = []
    for start, end in sentence_spans(text):
        if count_tokens(text[start:end]) > max_tokens:
            units.extend(_split_long(text, start, end, max_tokens, count_tokens))
        else:
            units.append((start, end))
    groups: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    size = 0
    for start, end in units:
        if current and size < max_sentences and count_tokens(text[current[0]:end]) <= max_tokens:
            current, size = (current[0], end), size + 1
            continue
        if current:
            groups.append(current)
        current, size = (start, end), 1
    if current:
        groups.append(current)
    return groups


def passage_id(transcript_key: str, text: str, occurrence: int) -> str:
    """Stable id: the same text at the same place in an interview keeps its id across reruns and versions."""
    digest = hashlib.sha256(f"{transcript_key}\x00{' '.join(text.split())}\x00{occurrence}".encode("utf-8"))
    return "p" + digest.hexdigest()[:15]


def segment_turns(transcript: Transcript, turns: Iterable[Turn], *, max_sentences: int = 3,
                  max_tokens: int = 250, count_tokens: TokenCounter = approximate_tokens) -> list[Passage]:
    """Passages of the respondent turns; interviewer turns are context and get none."""
    key = transcript.meta.key
    seen: Counter = Counter()
    passages = []
    for turn in turns:
        if turn.role != RESPONDENT:
            continue
        for start, end in group_sentences(turn.text, max_sentences=max_sentences,
                                          max_tokens=max_tokens, count_tokens=count_tokens):
            text = turn.text[start:end]
            normal = " ".join(text.split())
            seen[normal] += 1
            passages.append(Passage(
                passage_id=passage_id(key, normal, seen[normal]),
                transcript_key=key, turn_index=turn.index, speaker=turn.speaker,
                start=turn.start + start, end=turn.start + end, text=text,
            ))
    return passages
