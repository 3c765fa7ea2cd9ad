"""Frozen records that flow between stages: transcript -> turns -> passages -> codings."""

from __future__ import annotations

import hashlib
from pathlib import Path
import re
from dataclasses import dataclass, field

INTERVIEWER = "interviewer"
RESPONDENT = "respondent"


def text_hash(text: str) -> str:
    """Content key for a piece of text (embedding cache, change detection)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_sha256(path) -> str:
    """sha256 of a file's bytes, read in blocks (model weights run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_hashes_seen: dict[tuple, bool] = {}


def file_has_sha256(path, sha256: str | None) -> bool:
    """True when the file at ``path`` hashes to ``sha256``. Model files run to hundreds of MB and every step asks,
    so a match is remembered for the process while the file's size and modification time stay the same."""
    try:
        stat = Path(path).stat()
    except OSError:
        return False
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, sha256)
    if key not in _hashes_seen:
        matches = sha256 is not None and file_sha256(path) == sha256
        if not matches:
            return False
        _hashes_seen[key] = True
    return True


def slugify(value: str) -> str:
    """File-system-safe name for a council: 'Hollins Vale' -> 'hollins-vale'."""
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    return slug or "unnamed"


@dataclass(frozen=True)
class Code:
    id: str
    family: str
    label: str
    definition: str
    framework_area: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    restatements: tuple[str, ...] = ()
    """The code said again in other registers than interview speech: a research team's findings, council
    documents, remarks that imply the code without naming it. Optional; all written for this project."""


@dataclass(frozen=True)
class Codebook:
    name: str
    version: str
    codes: tuple[Code, ...]
    uncoded_examples: tuple[str, ...] = ()
    retired_codes: tuple[tuple[str, str | None], ...] = ()
    """(old id, new id or None): how reviewers' codes move when an id is retired or merged."""

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.codes)

    def code(self, code_id: str) -> Code:
        for c in self.codes:
            if c.id == code_id:
                return c
        raise KeyError(code_id)


@dataclass(frozen=True)
class TranscriptMeta:
    council: str
    interview_id: str
    council_type: str = ""
    respondent_role: str = ""
    round: str = ""
    date: str = ""

    @property
    def key(self) -> str:
        """Identity of an interview across versions of its file."""
        return f"{slugify(self.council)}/{self.interview_id}"


@dataclass(frozen=True)
class Finding:
    """Where the anonymisation gate found personal data, never what: e.g. (PERSON, "line 12")."""

    kind: str
    where: str


@dataclass(frozen=True)
class Transcript:
    """A decoded transcript body (front matter removed) with its gated metadata.

    ``source`` is the file's display label (its name passed through the gate),
    ``file_key`` its stored identity (a hash of its path in the round folder),
    ``round_key`` the identity of that folder. ``meta`` has been through the
    gate; ``findings`` says where it found something in the metadata and file
    name; the body ``text`` is gated later, only when the file is new or changed.
    """

    source: str
    meta: TranscriptMeta
    text: str
    source_hash: str = ""
    """Hash of the file's bytes and its manifest row: unchanged input is recognised without re-reading it."""
    file_key: str = ""
    round_key: str = ""
    findings: tuple[Finding, ...] = ()
    first_line: int = 1
    """The file line the body starts on, so a finding in the body can be named by its line in the file."""
    dropped_keys: tuple[str, ...] = ()
    """Gated names of front-matter keys qcode does not know; their values were dropped unread."""

    @property
    def content_hash(self) -> str:
        return text_hash(self.text)


@dataclass(frozen=True)
class Turn:
    index: int
    speaker: str
    role: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Passage:
    passage_id: str
    transcript_key: str
    turn_index: int
    speaker: str
    start: int
    end: int
    text: str

    @property
    def text_hash(self) -> str:
        return text_hash(self.text)


@dataclass(frozen=True)
class SegmentedTranscript:
    transcript: Transcript
    turns: tuple[Turn, ...]
    passages: tuple[Passage, ...]


@dataclass(frozen=True)
class Redaction:
    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class Quarantined:
    source: str
    """The file's display label (its gated name), never its raw name."""
    reason: str
    file_key: str = ""


@dataclass
class IngestReport:
    """What happened to each file of a round, by display label; counts and places only, never personal data."""

    files_seen: int = 0
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    redactions: dict[str, dict[str, int]] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)
    """Files whose interview left the active data: gone from the round folder, or given another council/id."""
    warnings: list[str] = field(default_factory=list)
    """One line each about the round that did not stop it (links out of the folder, manifest rows naming no file)."""

    @property
    def redaction_total(self) -> int:
        return sum(sum(kinds.values()) for kinds in self.redactions.values())


@dataclass(frozen=True)
class CodedPassage:
    """A respondent passage with its interview's metadata, the model's output and any reviewer decision."""

    passage_id: str
    council: str
    interview_id: str
    text: str
    respondent_role: str = ""
    round: str = ""
    question: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    applied: tuple[str, ...] = ()
    gold: tuple[str, ...] | None = None
    reviewer: str = ""
    note: str = ""
    why: str = ""

    @property
    def codes(self) -> tuple[str, ...]:
        """The reviewer's codes where there are any (gold outranks the model), else the model's."""
        return self.gold if self.gold is not None else self.applied
