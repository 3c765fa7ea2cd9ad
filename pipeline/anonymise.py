"""The anonymisation gate: find personal data left in a transcript and redact it.

Transcripts should arrive anonymised; this gate catches what slipped through
before anything is stored: e-mail addresses, UK phone numbers and postcodes,
titled names (Mr, Dr, Cllr, Councillor ... + name) and the participants' real
names listed in a round's ``known_names.txt``. Only counts per kind ever leave
this module; the values found are never logged or returned.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from pipeline.schemas import Redaction

PERSON, EMAIL, PHONE, POSTCODE = "PERSON", "EMAIL", "PHONE", "POSTCODE"
KINDS = (PERSON, EMAIL, PHONE, POSTCODE)

TITLES = ("mr", "mrs", "ms", "miss", "mx", "dr", "cllr", "councillor", "prof", "professor",
          "sir", "dame", "lord", "lady", "rev", "revd")

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_PHONE_CANDIDATE = re.compile(r"(?<![\w+])(?:\+44[\s-]?(?:\(0\)[\s-]?)?|\(?0)\d[\d\s()-]{7,14}\d(?!\w)")
_POSTCODE = re.compile(r"\b(?:GIR ?0AA|[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]? ?\d[ABD-HJLNP-UW-Z]{2})\b")


def _phone_digits_ok(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate.replace("(0)", "", 1))  # +44 (0)20 ...: the bracketed 0 is not dialled
    if digits.startswith("44"):
        return len(digits) in (11, 12)
    return len(digits) in (10, 11) and digits.startswith("0") and digits[1] != "0"


@lru_cache(maxsize=1)
def _blank_english():
    import spacy

    return spacy.blank("en")


class Anonymiser:
    """Detects and redacts personal data with regular expressions and spaCy rules.

    Parameters
    ----------
    known_names : iterable of str
        Real names of participants. A full name is matched in any case; each
        part of a name (first name, surname) is matched when written with a
        capital, as names are.

    Examples
    --------
    >>> a = Anonymiser(known_names=["Helen Marsh"])
    >>> text, counts = a.redact("Thanks, Helen. Cllr Jo Bell said mail x@y.org")
    >>> text
    'Thanks, [PERSON]. Cllr [PERSON] said mail [EMAIL]'
    >>> dict(counts)
    {'PERSON': 2, 'EMAIL': 1}
    """

    def __init__(self, known_names=()):
        from spacy.matcher import Matcher, PhraseMatcher

        self.nlp = _blank_english()
        self.known_names = tuple(n.strip() for n in known_names if n.strip())
        self.titled = Matcher(self.nlp.vocab)
        self.titled.add("TITLED", [[
            {"LOWER": {"IN": list(TITLES) + [t + "." for t in TITLES]}},
            {"ORTH": ".", "OP": "?"},
            {"IS_TITLE": True, "LENGTH": {">=": 2}, "IS_STOP": False},
            {"IS_TITLE": True, "LENGTH": {">=": 2}, "IS_STOP": False, "OP": "?"},
        ]], greedy="LONGEST")
        self.full_names = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        self.full_names.add("KNOWN", [self.nlp.make_doc(n) for n in self.known_names])
        parts = sorted({p for n in self.known_names for p in re.split(r"[\s-]+", n) if len(p) >= 2})
        self.name_parts = Matcher(self.nlp.vocab)
        if parts:
            self.name_parts.add("PART", [[{"ORTH": {"IN": [p[:1].upper() + p[1:] for p in parts] + [p.upper() for p in parts]}}]])
        # Only lines with a title or a known name can hold a name match: spaCy tokenises just those.
        words = list(TITLES) + [re.escape(p) for p in parts]
        self.trigger = re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE)

    def find(self, text: str) -> list[Redaction]:
        """Non-overlapping spans of personal data, in text order."""
        spans: list[Redaction] = []
        spans += [Redaction(m.start(), m.end(), EMAIL) for m in _EMAIL.finditer(text)]
        spans += [Redaction(m.start(), m.end(), PHONE) for m in _PHONE_CANDIDATE.finditer(text) if _phone_digits_ok(m.group())]
        spans += [Redaction(m.start(), m.end(), POSTCODE) for m in _POSTCODE.finditer(text)]
        for line in re.finditer(r"[^\n]+", text):
            if self.trigger.search(line.group()):
                spans += self._names(line.group(), line.start())
        return _without_overlaps(spans)

    def _names(self, text: str, offset: int) -> list[Redaction]:
        doc = self.nlp.make_doc(text)
        spans = []
        for _, start, end in self.titled(doc):
            first_name_token = start + 1
            if doc[first_name_token].text == ".":
                first_name_token += 1
            spans.append(Redaction(offset + doc[first_name_token].idx, offset + doc[end - 1].idx + len(doc[end - 1]), PERSON))
        for matcher in (self.full_names, self.name_parts):
            if not len(matcher):
                continue
            for _, start, end in matcher(doc):
                span = doc[start:end]
                spans.append(Redaction(offset + span.start_char, offset + span.end_char, PERSON))
        return spans

    def redact(self, text: str) -> tuple[str, Counter]:
        """Replace every finding with its kind in brackets; return the new text and counts per kind."""
        found = self.find(text)
        pieces, last = [], 0
        for r in found:
            pieces.append(text[last:r.start])
            pieces.append(f"[{r.kind}]")
            last = r.end
        pieces.append(text[last:])
        return "".join(pieces), Counter(r.kind for r in found)


def _without_overlaps(spans: list[Redaction]) -> list[Redaction]:
    chosen: list[Redaction] = []
    for span in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if chosen and span.start < chosen[-1].end:
            if span.end > chosen[-1].end:
                previous = chosen.pop()
                chosen.append(Redaction(previous.start, span.end, previous.kind))
            continue
        chosen.append(span)
    return chosen
