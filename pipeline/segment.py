"""Respondent turns -> passages of 1-3 sentences that the embedding model sees whole."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import lru_cache
from typing import Callable, Iterable

from pipeline.schemas import RESPONDENT, Passage, Transcript, Turn

TokenCounter = Callable[[str], int]
ManyTokenCounter = Callable[[list[str]], list[int]]


def approximate_tokens(text: str) -> int:
    """Word-piece count estimate for when no tokenizer is at hand (about 1.3 pieces per word)."""
    return int(len(text.split()) * 1.3) + 1


ABBREVIATIONS = ("Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "Cllr.", "St.", "e.g.", "i.e.", "etc.", "vs.", "No.")


@lru_cache(maxsize=1)
def _sentencizer():
    """spaCy's sentencizer behind a lean tokenizer that only splits off quotes and punctuation.

    The sentencizer needs nothing more, and the full English tokenizer made
    segmentation cost about a tenth of the embedding time; on the sample
    round both give the same sentences.
    """
    import spacy
    from spacy.tokenizer import Tokenizer

    nlp = spacy.blank("en")
    nlp.tokenizer = Tokenizer(
        nlp.vocab,
        prefix_search=re.compile(r"""^["'(\[“‘]""").search,
        suffix_search=re.compile(r"""(?:[.!?…]+|[,;:])["'”’)\]]*$|["'”’)\]]$""").search,
    )
    for abbreviation in ABBREVIATIONS:
        nlp.tokenizer.add_special_case(abbreviation, [{"ORTH": abbreviation}])
    nlp.add_pipe("sentencizer")
    return nlp


SENTENCE_CHUNK_CHARS = 100_000
"""spaCy refuses texts over ``nlp.max_length`` (1,000,000 characters), and a turn can be longer: turns go to
the sentencizer in pieces of at most this many characters, each cut after a sentence where there is one."""

_SENTENCE_END = re.compile(r"""[.!?…]+["'”’)\]]*\s+""")


def _chunks(text: str, limit: int = SENTENCE_CHUNK_CHARS) -> list[tuple[int, int]]:
    """Spans of at most ``limit`` characters covering ``text``, cut after a sentence end, else at white space."""
    bounds, start = [], 0
    while len(text) - start > limit:
        window = text[start:start + limit]
        cut = None
        for sentence_end in _SENTENCE_END.finditer(window, limit // 2):
            if not window[:sentence_end.start() + 1].endswith(ABBREVIATIONS):  # "Mr. Smith" is one sentence
                cut = sentence_end.end()
        if cut is None:
            spaces = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t"))
            cut = spaces + 1 if spaces > 0 else limit
        bounds.append((start, start + cut))
        start += cut
    bounds.append((start, len(text)))
    return bounds


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences in ``text``, trimmed of surrounding white space."""
    spans = []
    for offset, chunk_end in _chunks(text):
        for sent in _sentencizer()(text[offset:chunk_end]).sents:
            start, end = offset + sent.start_char, offset + sent.end_char
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if start < end:
                spans.append((start, end))
    return spans


def _split_long(text: str, start: int, end: int, budget: int, count_many: ManyTokenCounter) -> list[tuple[int, int]]:
    """Cut a sentence longer than the budget at word boundaries."""
    words = [(start + w.start(), start + w.end()) for w in re.finditer(r"\S+", text[start:end])]
    sizes = count_many([text[a:b] for a, b in words])
    pieces: list[tuple[int, int]] = []
    piece, size = None, 0
    for (a, b), n in zip(words, sizes):
        if piece is not None and size + n <= budget:
            piece, size = (piece[0], b), size + n
            continue
        if piece is not None:
            pieces.append(piece)
        piece, size = (a, b), n
    if piece:
        pieces.append(piece)
    return pieces


def group_sentences(text: str, *, max_sentences: int = 3, max_tokens: int = 250,
                    count_tokens: TokenCounter = approximate_tokens,
                    count_many: ManyTokenCounter | None = None) -> list[tuple[int, int]]:
    """Greedily pack consecutive sentences into spans of at most ``max_sentences`` within the token budget.

    A span's size is the sum of its sentences' word-piece counts (word pieces
    never cross white space), so each sentence is counted once; ``count_many``
    counts a list at once when the tokenizer can batch.

    Examples
    --------
    >>> text = "One. Two. Three. Four."
    >>> [text[s:e] for s, e in group_sentences(text, max_sentences=3)]
    ['One. Two. Three.', 'Four.']
    """
    count_many = count_many or (lambda texts: [count_tokens(t) for t in texts])
    spans = sentence_spans(text)
    units: list[tuple[int, int, int]] = []
    for (start, end), size in zip(spans, count_many([text[s:e] for s, e in spans])):
        if size > max_tokens:
            pieces = _split_long(text, start, end, max_tokens, count_many)
            units += [(a, b, n) for (a, b), n in zip(pieces, count_many([text[a:b] for a, b in pieces]))]
        else:
            units.append((start, end, size))
    groups: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    sentences = tokens = 0
    for start, end, size in units:
        if current and sentences < max_sentences and tokens + size <= max_tokens:
            current, sentences, tokens = (current[0], end), sentences + 1, tokens + size
            continue
        if current:
            groups.append(current)
        current, sentences, tokens = (start, end), 1, size
    if current:
        groups.append(current)
    return groups


def passage_id(transcript_key: str, text: str, occurrence: int) -> str:
    """Stable id: the same text at the same place in an interview keeps its id across reruns and versions."""
    digest = hashlib.sha256(f"{transcript_key}\x00{' '.join(text.split())}\x00{occurrence}".encode("utf-8"))
    return "p" + digest.hexdigest()[:15]


def segment_turns(transcript: Transcript, turns: Iterable[Turn], *, max_sentences: int = 3,
                  max_tokens: int = 250, count_tokens: TokenCounter = approximate_tokens,
                  count_many: ManyTokenCounter | None = None) -> list[Passage]:
    """Passages of the respondent turns; interviewer turns are context and get none."""
    key = transcript.meta.key
    seen: Counter = Counter()
    passages = []
    for turn in turns:
        if turn.role != RESPONDENT:
            continue
        for start, end in group_sentences(turn.text, max_sentences=max_sentences, max_tokens=max_tokens,
                                          count_tokens=count_tokens, count_many=count_many):
            text = turn.text[start:end]
            normal = " ".join(text.split())
            seen[normal] += 1
            passages.append(Passage(
                passage_id=passage_id(key, normal, seen[normal]),
                transcript_key=key, turn_index=turn.index, speaker=turn.speaker,
                start=turn.start + start, end=turn.start + end, text=text,
            ))
    return passages
