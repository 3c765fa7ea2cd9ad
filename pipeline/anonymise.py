"""The anonymisation gate: find personal data left in a transcript and redact it.

Transcripts should arrive anonymised; this gate catches what slipped through
before anything is stored. Rules find e-mail addresses (also spelled out,
"jo dot bell at example dot com"), UK phone numbers, postcodes, National
Insurance numbers, dates of birth (a date next to "born", "DOB", "date of
birth", "birthday"), street addresses (house number + street), titled names
(Mr, Dr, Cllr, Councillor ... + name) and the participants' real names listed
in a round's ``known_names.txt``; spaCy's ``en_core_web_sm`` entity recogniser
(see ``pipeline/ner_model.py``) adds untitled names, filtered so that role
words, places and organisations are left alone.

Text is matched after a length-aware normalisation (NFKD with accents dropped,
no-break and other spaces as spaces, curly apostrophes and quotes straight,
non-breaking hyphens as hyphens), so "Siân", "Sia\u0302n" and "Sian" or "O’Rourke"
and "O'Rourke" are the same name, and every span found is mapped back to the
original text. Only counts per kind ever leave this module; the values found are
never logged or returned except as spans.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections import Counter
from functools import lru_cache
from pathlib import Path

from pipeline.schemas import Redaction

PERSON, EMAIL, PHONE, POSTCODE = "PERSON", "EMAIL", "PHONE", "POSTCODE"
NI_NUMBER, DATE_OF_BIRTH, ADDRESS = "NI_NUMBER", "DATE_OF_BIRTH", "ADDRESS"
KINDS = (PERSON, EMAIL, PHONE, POSTCODE, NI_NUMBER, DATE_OF_BIRTH, ADDRESS)

# Titles before a name. Those in LOWER_CASE_TITLES also count written in lower case ("councillor Brennan");
# the others are ordinary words in lower case ("we miss Tom"). Only abbreviations may carry a full stop
# ("Mr. Okafor"); after a whole word a full stop ends the sentence.
TITLES = ("mr", "mrs", "ms", "miss", "mx", "dr", "cllr", "councillor", "prof", "professor",
          "sir", "dame", "lord", "lady", "rev", "revd", "baroness")
LOWER_CASE_TITLES = frozenset({"mr", "mrs", "ms", "mx", "dr", "cllr", "councillor", "prof", "professor", "revd"})
ABBREVIATED_TITLES = frozenset({"mr", "mrs", "ms", "mx", "dr", "cllr", "prof", "rev", "revd"})
# Lower-case parts of surnames ("van der Merwe", "de la Cruz"): part of a name only before a capitalised word.
PARTICLES = frozenset({"van", "von", "der", "den", "de", "da", "di", "du", "del", "della", "la", "le", "dos", "das",
                       "ap", "ab", "bin", "ibn", "al", "el", "ni", "nic", "mac", "ter", "ten"})
# Capitalised words that follow a title or sit in a name-like run but are roles, bodies or calendar words.
ROLE_WORDS = frozenset("""
mayor leader chair chairman chairwoman chairperson chief executive director deputy cabinet council councillor
councillors member members officer officers speaker justice lieutenant provost sheriff secretary minister
president manager head assistant principal portfolio holder lead service services team board committee
authority borough county district city town parish trust partnership nhs government department
""".split())
CALENDAR_WORDS = frozenset("""
monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
september october november december christmas easter
""".split())
NOT_NAMES = ROLE_WORDS | CALENDAR_WORDS

# --- Normalisation ----------------------------------------------------------------------------------------

_CHAR_MAP = {
    **{c: " " for c in "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000\t"},
    **{c: "'" for c in "\u2018\u2019\u201a\u201b\u2032\u02bc\u02bb\u00b4\u0060"},
    **{c: '"' for c in "\u201c\u201d\u201e\u201f\u2033"},
    **{c: "-" for c in "\u2010\u2011\u2012\u2212"},
}


@lru_cache(maxsize=4096)
def _normalise_char(c: str) -> str:
    if c in _CHAR_MAP:
        return _CHAR_MAP[c]
    if unicodedata.combining(c):
        return ""
    decomposed = unicodedata.normalize("NFKD", c)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)) if decomposed != c else c


class _Normalised:
    """A normalised copy of a text and the map from its offsets back to the original's."""

    def __init__(self, text: str):
        self.original = text
        if text.isascii() and "\t" not in text and "`" not in text:
            self.text, self._origin = text, None
            return
        pieces, origin = [], []
        for i, c in enumerate(text):
            n = _normalise_char(c)
            pieces.append(n)
            origin.extend([i] * len(n))
        self.text, self._origin = "".join(pieces), origin

    def span(self, start: int, end: int, kind: str) -> Redaction:
        """A span of the normalised text as a Redaction of the original text."""
        if self._origin is None:
            return Redaction(start, end, kind)
        o_start, o_end = self._origin[start], self._origin[end - 1] + 1
        while o_end < len(self.original) and unicodedata.combining(self.original[o_end]):
            o_end += 1  # a decomposed accent after the last letter belongs to the span
        return Redaction(o_start, o_end, kind)


def normalise(text: str) -> str:
    """The text as the gate matches it: accents dropped, spaces, apostrophes, quotes and hyphens made plain.

    Examples
    --------
    >>> normalise("Dr\u00a0Siân O’Rourke")
    "Dr Sian O'Rourke"
    """
    return _Normalised(text).text


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """Common English words in lower case (see the header of common_words.txt) and spaCy's stop words."""
    from spacy.lang.en.stop_words import STOP_WORDS

    lines = Path(__file__).with_name("common_words.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(w for w in lines if w and not w.startswith("#")) | frozenset(STOP_WORDS)


# --- Patterns ---------------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])\w(?:[\w.+-]|'(?=\w))*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_DOT = r"(?:[ ]*(?:\.|\[dot\]|\(dot\))[ ]*|[ ]+dot[ ]+)"
_AT = r"(?:[ ]*(?:@|\[at\]|\(at\))[ ]*|[ ]+at[ ]+)"
_SPELLED_EMAIL = re.compile(
    rf"(?<![\w.@'+-])[\w'+-]+(?:{_DOT}[\w'+-]+)*{_AT}(?P<domain>[a-z0-9-]+(?:{_DOT}[a-z0-9-]+)+)(?![\w@])", re.I)
_SPELLED = re.compile(r"\bdot\b|\[(?:at|dot)\]|\((?:at|dot)\)", re.I)
_TOP_LEVEL = frozenset("com org net uk gov edu io info biz co ac eu ie me us de fr nl es it au ca nz in scot wales "
                       "cymru london nhs int".split())
_PUBLIC_SUFFIX_START = frozenset("gov co ac org nhs police sch ltd plc net mod parliament".split())

_PHONE_CANDIDATE = re.compile(r"(?<![\w+])(?:(?:\+|00)44[ .-]?(?:\(0\)[ .-]?)?|\(?0)\d[\d ().-]{7,14}\d(?!\w)")
_POSTCODE = re.compile(r"\b(?:GIR ?0AA|[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]? {0,2}\d[ABD-HJLNP-UW-Z]{2})\b", re.I)
_ORDINAL = re.compile(r"\d(?:st|nd|rd|th)$")

# HMRC: the first letter is not D, F, I, Q, U or V; the second not D, F, I, O, Q, U or V; BG, GB, KN, NK, NT,
# TN and ZZ are never used; the suffix is A-D. QQ is HMRC's specimen prefix (QQ 12 34 56 C on its forms).
_NI_NUMBER = re.compile(r"(?<!\w)(?!(?:BG|GB|KN|NK|NT|TN|ZZ))(?P<prefix>[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]|QQ)"
                        r"(?P<sep>[ -]?)\d\d(?P=sep)\d\d(?P=sep)\d\d(?P=sep)[A-D](?!\w)", re.I)

_MONTH = (r"(?:january|february|march|april|may|june|july|august|september|october|november|december"
          r"|(?:jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec)\b\.?)")
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:1[89]\d\d|20\d\d|'\d\d)"
_DATE = (rf"(?:(?:[12]\d|3[01]|0?[1-9])[/.-](?:1[0-2]|0?[1-9])[/.-](?:\d{{4}}|\d\d)"
         rf"|\d{{4}}-(?:1[0-2]|0[1-9])-(?:[12]\d|3[01]|0[1-9])"
         rf"|{_DAY}(?: of)? +{_MONTH}(?:,? +{_YEAR})?"
         rf"|{_MONTH} +{_DAY}(?:,? +{_YEAR})?)(?![\w/])")
# A date counts as a date of birth only right after a birth word, with at most a few small words between.
_DATE_OF_BIRTH = re.compile(
    rf"\b(?:born|birth(?:day|date)?|d\.?o\.?b)\b\.?(?:[ :,-]*\b(?:on|is|was|the|of|at|around)\b)*[ :,-]*"
    rf"(?P<date>{_DATE})", re.I)

_STREET_TYPES = ("street|st|road|rd|avenue|ave|lane|ln|close|drive|way|crescent|cres|place|court|gardens|gdns|"
                 "terrace|grove|hill|row|square|sq|walk|mews|park|rise|view|green|parade|vale|wharf|yard|"
                 "boulevard|embankment|approach|circus|brow|fold|croft|meadow|meadows|chase|wynd|gate|villas|"
                 "cottages|quay|broadway|causeway|hollow|dale|heights|crossing|end|side")
_STREET_NAME_WORD = r"(?:St\.?|Mc[A-Z][a-z]+|[A-Z][a-z]+(?:'s)?|[A-Z]{2,}(?:'S)?)(?:-[A-Z][a-z]+)*"
_ADDRESS = re.compile(
    rf"(?<![\w,.])(?:(?i:flat|apartment|apt|unit|room|suite)\.? +\d{{1,4}}[A-Za-z]?,? +)?"
    rf"(?!(?:19|20)\d\d\b)\d{{1,4}}[A-Za-z]?,? +(?:{_STREET_NAME_WORD} +){{1,3}}(?i:{_STREET_TYPES})\b")

_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)", re.M)
# What may stand before a sentence's first word: a speaker label ("A:", "Interviewer (P1):", "**R:**"), stage
# directions ("[laughs]"), quotes, brackets, dashes.
_OPENING = re.compile(r"(?:[\s\"'(*_-]|\[[^\]\n]{0,40}\])*(?:[A-Z][\w ().]{0,30}:(?:[\s\"'(*_-]|\[[^\]\n]{0,40}\])*)?")
_CAPITALISED = re.compile(r"(?<![\w'-])[A-Z][^\W_]*(?:'[a-z]+)?")
_I_FORMS = frozenset({"i", "i'm", "i've", "i'd", "i'll"})
_SENTENCE_OPENERS = frozenset({".", "!", "?", ":", ";", '"', "'", "]", ")", "(", "[", "-", "--"})
# A single capitalised word after these is a thing or a place, not a person: "the Pledge", "in Rotterdam".
_NOT_BEFORE_A_NAME = frozenset("the a an this that these those our their its my your his her in at near into "
                               "across around outside inside towards".split())
_MOVING = frozenset("move moves moved moving go goes went going gone come comes came coming travel travels travelled "
                    "traveled travelling commute commutes commuted commuting drive drives drove driving relocate "
                    "relocated back down up over out away round across trip trips journey way".split())
_TITLE = re.compile(r"(?<![\w'-])(" + "|".join(TITLES) + r")(\.?)(?= +\S)", re.I)
_NAME_TOKEN = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")
_GAP = re.compile(r" +")


def redact_file_name(redact, name: str) -> tuple[str, Counter]:
    """A file name through a gate's ``redact``: the stem read as words (people put underscores between the
    words of a name), the suffix kept.

    Examples
    --------
    >>> redact_file_name(Anonymiser(ner=False).redact, "Dr_Esme_Ravensworth.md")[0]
    'Dr [PERSON].md'
    """
    gated, found = redact(file_name_words(name))
    return gated + Path(name).suffix, found


def file_name_words(name: str) -> str:
    """What of a file name the gate reads: its stem, underscores as spaces.

    Examples
    --------
    >>> file_name_words("Dr_Esme_Ravensworth.md")
    'Dr Esme Ravensworth'
    """
    return str(Path(name).with_suffix("")).replace("_", " ")


def _phone_digits_ok(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate.replace("(0)", "", 1))  # +44 (0)20 ...: the bracketed 0 is not dialled
    if digits.startswith("0044"):
        digits = digits[2:]
    if digits.startswith("44"):
        return len(digits) in (11, 12)
    return len(digits) in (10, 11) and digits.startswith("0") and digits[1] != "0"


def _capitalised(word: str) -> bool:
    return word[:1].isupper()


class Anonymiser:
    """Detects and redacts personal data with rules, the round's known names and a named-entity model.

    Parameters
    ----------
    known_names : iterable of str
        Real names of participants. A full name is matched in any case; each part
        of a name (first name, surname) when written with a capital, or in lower
        case when it is not also a common English word ("sian" yes, "hope" no).
        Accents, apostrophes and spacing need not match.
    allow : iterable of str
        Words and phrases never redacted as names (council names, say), in any
        case. Patterns (e-mail addresses, phone numbers ...) are still redacted whole.
    ner : bool
        Also redact the names spaCy's entity recogniser finds (PERSON only).

    Examples
    --------
    >>> a = Anonymiser(known_names=["Helen Marsh"])
    >>> text, counts = a.redact("Thanks, Helen. Cllr Jo Bell said mail x@y.org")
    >>> text
    'Thanks, [PERSON]. Cllr [PERSON] said mail [EMAIL]'
    >>> dict(counts)
    {'PERSON': 2, 'EMAIL': 1}
    """

    def __init__(self, known_names=(), allow=(), *, ner: bool = True):
        self.known_names = tuple(n.strip() for n in known_names if n and n.strip())
        self.allow = tuple(a.strip() for a in allow if a and a.strip())
        full, parts = [], set()
        for name in map(normalise, self.known_names):
            words = [w for w in re.split(r"[ -]+", name) if w]
            if words:
                full.append("(?:[ ]*-[ ]*|[ ]+)".join(re.escape(w) for w in words))
            for chunk in name.split():
                parts.add(chunk)  # a hyphenated surname as a whole, and each of its pieces
                parts.update(p for p in chunk.split("-") if p)
        self._full = self._alternation(full)
        self._parts = self._alternation([re.escape(p) for p in parts if len(p) >= 2 and p.lower() not in PARTICLES])
        self._allowed = self._phrases(self.allow)
        self.ner = ner
        self._nlp = self._dictionary = None

    @property
    def nlp(self):
        """spaCy's entity recogniser (None without ``ner``), loaded and hash-checked on first use, once per
        process: a run that gates nothing never loads it."""
        if self.ner and self._nlp is None:
            from pipeline.ner_model import load_ner

            self._nlp = load_ner()
        return self._nlp

    @property
    def common(self) -> frozenset[str]:
        """Common English words (``common_words``), read on first use: spaCy's stop words import spaCy."""
        return common_words()

    @property
    def dictionary(self) -> frozenset[str]:
        """The English words a capitalised word is checked against: WordNet's with ``ner``, else common words."""
        if self._dictionary is None:
            from pipeline.ner_model import dictionary

            self._dictionary = dictionary() if self.ner else self.common
        return self._dictionary

    def load(self) -> "Anonymiser":
        """Load the entity model now (it loads on first use otherwise): a missing or altered model raises
        NerModelError here."""
        if self.ner:
            self.nlp, self.dictionary  # noqa: B018 - the properties load them
        return self

    def allowing(self, names) -> "Anonymiser":
        """This gate with more words never redacted as names (a round's council names); models are shared.

        Examples
        --------
        >>> Anonymiser(ner=False).allowing(["Hollins Vale"]).allow
        ('Hollins Vale',)
        """
        extra = [n.strip() for n in names if n and n.strip() and n.strip() not in self.allow]
        if not extra:
            return self
        wider = copy.copy(self)
        wider.allow = self.allow + tuple(sorted(set(extra)))
        wider._allowed = self._phrases(wider.allow)
        return wider

    def allowed_spans(self, text: str) -> list[tuple[int, int]]:
        """Where the allowed phrases match ``text`` (normalised), the only way ``allow`` shapes what is found:
        a text with the same spans under two gates that differ only in ``allow`` is gated the same by both.

        Examples
        --------
        >>> Anonymiser(ner=False).allowing(["Hollins Vale"]).allowed_spans("Hollins  Vale CEO")
        [(0, 13)]
        """
        return [m.span() for m in self._allowed.finditer(normalise(text))] if self._allowed else []

    @classmethod
    def _phrases(cls, phrases):
        """One pattern matching any of ``phrases`` as normalised words, whatever the spacing between them."""
        return cls._alternation(["[ ]+".join(re.escape(w) for w in normalise(a).split()) for a in phrases])

    @staticmethod
    def _alternation(patterns: list[str]):
        if not patterns:
            return None
        ordered = sorted(set(patterns), key=len, reverse=True)
        return re.compile(r"(?<!\w)(?:" + "|".join(ordered) + r")(?!\w)", re.I)

    # -- public API --

    def find(self, text: str) -> list[Redaction]:
        """Non-overlapping spans of personal data in the original text, in text order."""
        norm = _Normalised(text)
        t = norm.text
        spans: list[tuple[int, int, str]] = []
        spans += [(m.start(), m.end(), EMAIL) for m in _EMAIL.finditer(t)]
        spans += [(m.start(), m.end(), EMAIL) for m in _SPELLED_EMAIL.finditer(t) if self._spelled_email_ok(m)]
        spans += [(m.start(), m.end(), PHONE) for m in _PHONE_CANDIDATE.finditer(t) if _phone_digits_ok(m.group())]
        spans += [(m.start(), m.end(), POSTCODE) for m in _POSTCODE.finditer(t) if self._postcode_ok(m.group())]
        spans += [(m.start(), m.end(), NI_NUMBER) for m in _NI_NUMBER.finditer(t) if self._ni_number_ok(m)]
        spans += [(m.start("date"), m.end("date"), DATE_OF_BIRTH) for m in _DATE_OF_BIRTH.finditer(t)]
        spans += [(m.start(), m.end(), ADDRESS) for m in _ADDRESS.finditer(t)]
        names = self._titled_names(t) + self._known_names(t)
        if self.nlp is not None:
            names += self._model_names(t)
        spans += self._without_allowed(t, names)
        return [norm.span(s, e, kind) for s, e, kind in _merge(t, spans)]

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

    # -- patterns --

    @staticmethod
    def _spelled_email_ok(m: re.Match) -> bool:
        labels = re.split(_DOT, m.group("domain"), flags=re.I)
        return (bool(_SPELLED.search(m.group())) and labels[-1].lower() in _TOP_LEVEL
                and labels[0].lower() not in _PUBLIC_SUFFIX_START)

    @staticmethod
    def _postcode_ok(found: str) -> bool:
        return found.isupper() or not _ORDINAL.search(found.lower())  # "b2 3rd" is not a postcode

    def _ni_number_ok(self, m: re.Match) -> bool:
        # "at 12 34 56 a": a lower-case small word and a spaced number is prose, not an NI number.
        return not (m.group("sep") and m.group("prefix").islower() and m.group("prefix") in _stop_words())

    # -- names --

    def _titled_names(self, t: str) -> list[tuple[int, int, str]]:
        spans = []
        for m in _TITLE.finditer(t):
            title, stop = m.group(1), m.group(2)
            lower = title.lower()
            if title.islower() and lower not in LOWER_CASE_TITLES:
                continue
            if stop and lower not in ABBREVIATED_TITLES:
                continue
            span = self._name_after_title(t, m.end(), shouting=title.isupper() and len(title) > 1)
            if span:
                spans.append((*span, PERSON))
        return spans

    def _name_after_title(self, t: str, pos: int, shouting: bool) -> tuple[int, int] | None:
        """The name right after a title: capitalised words, initials and particles, up to four words."""
        first = last = None
        pending = None  # an initial, particle or small word that belongs to the name only if a name word follows
        words = 0
        while words < 4:
            gap = _GAP.match(t, pos)
            if not gap:
                break
            word = _NAME_TOKEN.match(t, gap.end())
            if not word:
                break
            w = word.group()
            start, end = word.span()
            lower = w.lower()
            if len(w) == 1 and w.isupper():  # an initial: "J" or "J."
                if end < len(t) and t[end] == ".":
                    end += 1
                pending = pending or start
                pos = end
                continue
            if lower in PARTICLES and w.islower():
                pending = pending or start
                pos = end
                continue
            if not _capitalised(w) or lower in ROLE_WORDS or (words and lower in CALENDAR_WORDS):
                break
            if shouting and not w.isupper():
                break  # "MS Teams": an upper-case title is a title only before an upper-case name
            if w.isupper() and shouting and words and self._is_word(lower):
                break  # "DR ORLA KINSELLA AGREED"
            if words == 0 and pending is None and (lower in _stop_words() or lower in CALENDAR_WORDS):
                pending = start  # "Mr Will Hargreaves": a small word is a name only with a surname after it
                pos = end
                words += 1
                continue
            first = first if first is not None else (pending if pending is not None else start)
            pending = None
            if w.endswith(("'s", "'S")):
                last = end - 2
                break
            last = end
            pos = end
            words += 1
        return (first, last) if first is not None else None

    def _known_names(self, t: str) -> list[tuple[int, int, str]]:
        spans = []
        if self._full:
            spans += [(m.start(), m.end(), PERSON) for m in self._full.finditer(t)]
        if self._parts:
            for m in self._parts.finditer(t):
                w = m.group()
                if _capitalised(w) or w.lower() not in self.common:
                    spans.append((m.start(), m.end(), PERSON))
        return spans

    def _model_names(self, t: str) -> list[tuple[int, int, str]]:
        """PERSON entities of the sentences that can hold an untitled name (a quarter of a typical transcript)."""
        sentences = [m for m in _SENTENCE.finditer(t) if self._may_hold_name(m.group())]
        spans = []
        for m, doc in zip(sentences, self.nlp.pipe([m.group() for m in sentences], batch_size=64)):
            for ent in doc.ents:
                if ent.label_ == "PERSON":
                    span = self._plausible_name(ent)
                    if span:
                        spans.append((m.start() + span[0], m.start() + span[1], PERSON))
        return spans

    def _may_hold_name(self, sentence: str) -> bool:
        """A capitalised word that is not "I", a role or calendar word, or a sentence's first word that is a word."""
        opening = _OPENING.match(sentence).end()
        for w in _CAPITALISED.finditer(sentence, opening):
            word = w.group()
            lower = word.lower()
            if lower in _I_FORMS or lower in NOT_NAMES or word.isupper() or not word.replace("'", "").isalpha():
                continue  # "I", roles, acronyms (IT, HR), codes (CB4)
            if w.start() > opening or not self._is_word(word):
                return True
        return False

    def _is_word(self, word: str) -> bool:
        """An English word (WordNet, stop words), also as a plural, past tense, -ing or -ly form."""
        w = re.sub(r"'(?:s|re|ve|d|ll|m|t)$|n't$", "", word.lower())
        words = self.dictionary
        if w in words or w in _stop_words():
            return True
        for suffix, replacement in (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""),
                                    ("ing", "e"), ("ly", ""), ("ily", "y")):
            if w.endswith(suffix) and len(w) > len(suffix) + 2 and w[: -len(suffix)] + replacement in words:
                return True
        return False

    def _plausible_name(self, ent) -> tuple[int, int] | None:
        """The part of a PERSON entity that is a name, or None: role words, titles and stray words trimmed."""
        tokens = [tok for tok in ent if not tok.is_punct or tok.text in ("-", "'")]
        while tokens and (tokens[0].lower_ in NOT_NAMES or tokens[0].lower_.rstrip(".") in TITLES
                          or not _capitalised(tokens[0].text)):
            tokens.pop(0)
        while tokens and (tokens[-1].lower_ in NOT_NAMES or tokens[-1].text in ("'s", "'", "-")
                          or not _capitalised(tokens[-1].text)):
            tokens.pop()
        words = [tok for tok in tokens if tok.is_alpha]
        if not words or any(tok.like_num for tok in tokens):
            return None
        first = tokens[0]
        before = next((tok for tok in reversed(first.doc[:first.i]) if not tok.is_space), None)
        if len(words) == 1:
            word = words[0]
            if word.is_upper and len(word) > 1:
                return None  # an acronym: LGA, SEND
            if before is not None and before.lower_ in _NOT_BEFORE_A_NAME:
                return None  # "the Pledge", "in Rotterdam"
            if (before is not None and before.lower_ in ("to", "from") and before.i > 0
                    and before.doc[before.i - 1].lower_ in _MOVING):
                return None  # "moved to Manchester", "came back from Leeds"; but "spoke to Sarah"
            after = tokens[-1].nbor(1) if tokens[-1].i + 1 < len(tokens[-1].doc) else None
            if after is not None and _capitalised(after.text) and after.lower_ not in _I_FORMS:
                return None  # one word of a capitalised title: "Fenley Says No To Smelly Bins"
            sentence_start = before is None or before.text in _SENTENCE_OPENERS
            if sentence_start and self._is_word(word.text):
                return None  # "Silos, mostly.", "[pause] Badly, at first."
        return first.idx, tokens[-1].idx + len(tokens[-1].text)

    def _without_allowed(self, t: str, spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
        if not self._allowed:
            return spans
        allowed = [m.span() for m in self._allowed.finditer(t)]
        out = []
        for start, end, kind in spans:
            pieces = [(start, end)]
            for a_start, a_end in allowed:
                if a_end <= start or a_start >= end:
                    continue
                pieces = [p for s, e in pieces for p in ((s, min(e, a_start)), (max(s, a_end), e)) if p[0] < p[1]]
            for s, e in pieces:
                piece = re.search(r"\w(?:.*\w)?", t[s:e])
                if piece and re.search(r"[^\W\d_]{2}", piece.group()):
                    out.append((s + piece.start(), s + piece.end(), kind))
        return out


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


def _merge(t: str, spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Overlapping spans become one (the earliest, longest kind wins); names only a space apart become one."""
    chosen: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(spans, key=lambda s: (s[0], -(s[1] - s[0]))):
        if chosen:
            p_start, p_end, p_kind = chosen[-1]
            touching = kind == PERSON == p_kind and re.fullmatch(r"[ -]*", t[p_end:start] if start >= p_end else "")
            if start < p_end or touching:
                chosen[-1] = (p_start, max(p_end, end), p_kind)
                continue
        chosen.append((start, end, kind))
    return chosen
