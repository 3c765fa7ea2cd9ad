"""Read a round folder: file formats, decoding, metadata and speaker turns.

A round folder holds transcripts (.txt, .md, .docx), an optional
``manifest.csv`` with metadata for any file, and an optional
``known_names.txt`` with participants' real names for the anonymisation gate.
One bad file never stops the others: it is returned as quarantined with a
reason the research team can act on.

Everything read here goes through the anonymisation gate before it can be
stored or shown: metadata values, the names of unknown front-matter keys and
the file name itself. A file's identity is its path in the round folder,
stored only as a hash (``file_key``); what people see is its gated name.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import re
import traceback
import zipfile
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

import yaml

from pipeline.anonymise import Anonymiser, file_name_words, redact_file_name
from pipeline.errors import RoundError, TranscriptError
from pipeline.schemas import INTERVIEWER, RESPONDENT, Finding, Quarantined, Transcript, TranscriptMeta, Turn

TRANSCRIPT_SUFFIXES = (".txt", ".md", ".docx")
MANIFEST = "manifest.csv"
KNOWN_NAMES = "known_names.txt"
SIDE_FILES = {MANIFEST, KNOWN_NAMES, "readme.md", "readme.txt"}
META_FIELDS = tuple(f.name for f in fields(TranscriptMeta))
FILE_NAME = "the file name"
SHOWN_FINDINGS = 10

MAX_LINE_CHARS = 1_000_000
"""spaCy's ``nlp.max_length``: the anonymisation gate tokenises a line at a time, so no line may be longer."""
MAX_FRONT_MATTER_CHARS = 64 * 1024
"""Metadata is a few short lines; a larger block is a mistake or an attack on the YAML parser."""

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# What Windows-1252 makes of bytes that other single-byte encodings use for letters or the euro: Latin-9
# (ISO-8859-15) stores € as the byte cp1252 reads as '¤', Latin-2 and Windows-1250 store ś ą ł ź ż ... as
# '¶' '±' '³' '¼' '¿' .... English text never writes '¤', and never puts these symbols between two letters
# (the acute accent typed as an apostrophe, "don´t", is left alone: it is real Windows-1252 text).
_MOJIBAKE = re.compile(r"¤|(?<=[^\W\d_])[¡¢¥¦§¨ª¬¯°±²³µ¶¸¹º¼½¾¿×÷](?=[^\W\d_])")
_FRONT_MATTER = re.compile(r"\A[ \t]*---[ \t]*\r?\n(.*?)^[ \t]*---[ \t]*(?:\r?\n|\Z)", re.S | re.M)
_TURN_LABEL = re.compile(r"^[ \t]*[*_]*(?P<label>[A-Za-z][A-Za-z .'-]{0,30}?(?:[ \t]*\d{1,3})?)[ \t]*[*_]*:[*_]*[ \t]*", re.M)


def decode_text(data: bytes, source: Path | str) -> str:
    """Decode what Word, Excel and text editors save: UTF-8 (with or without BOM) or Windows-1252.

    Examples
    --------
    >>> decode_text("café".encode("cp1252"), "a.txt")
    'café'
    >>> decode_text(b"\\xef\\xbb\\xbfhello", "a.txt")
    'hello'
    """
    if b"\x00" in data:
        raise TranscriptError(source, "is not a text file (binary data, or UTF-16 text); save it as UTF-8 text or .docx")
    windows_1252 = False
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text, windows_1252 = data.decode("cp1252"), True
        except UnicodeDecodeError:
            raise TranscriptError(source, "is neither UTF-8 nor Windows-1252 text; open it and save it as UTF-8") from None
    if _CONTROL_CHARS.search(text):
        raise TranscriptError(source, "contains control characters, so it is probably not a text file; save it as UTF-8 text")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    misread = _MOJIBAKE.search(text) if windows_1252 else None
    if misread:
        line = text.count("\n", 0, misread.start()) + 1
        raise TranscriptError(source, f"looks saved in another encoding (line {line} "
                              f"reads '{misread.group()}' where a letter or '€' was meant, as Latin-9 or Central "
                              "European text does); open it and save it as UTF-8")
    check_line_lengths(text.split("\n"), source, "line")
    return text


def check_line_lengths(lines: list[str], source: Path | str, unit: str) -> None:
    """Refuse a line (or Word paragraph) longer than the anonymisation gate can check at once."""
    if max(map(len, lines), default=0) <= MAX_LINE_CHARS:
        return
    number, line = next((n, line) for n, line in enumerate(lines, 1) if len(line) > MAX_LINE_CHARS)
    raise TranscriptError(source, f"{unit} {number} has {len(line):,} characters, more than qcode can check for "
                          f"personal data at once ({MAX_LINE_CHARS:,}); break it into paragraphs")


def read_docx_text(path: Path) -> str:
    import docx  # python-docx is imported lazily: most rounds are plain text
    from docx.opc.exceptions import PackageNotFoundError
    from lxml.etree import XMLSyntaxError

    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError, PackageNotFoundError) as exc:
        raise TranscriptError(path, f"cannot be opened as a Word document ({exc.__class__.__name__}); re-save it from Word as .docx") from None
    except (XMLSyntaxError, zlib.error, EOFError) as exc:  # a part cut short or garbled: a partial copy or a bad disk
        kind = "zlib.error" if isinstance(exc, zlib.error) else exc.__class__.__name__
        raise TranscriptError(path, f"is a damaged Word document (a part of it is cut short or corrupt: {kind}); "
                              "re-save it from Word as .docx, or copy it again") from None
    paragraphs = [p.text for p in document.paragraphs]
    check_line_lengths(paragraphs, path, "paragraph")
    return "\n".join(paragraphs)


class _AliasError(yaml.YAMLError):
    def __init__(self, mark):
        super().__init__("anchor or alias")
        self.problem_mark = mark


class _FrontMatterLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases ('&a', '*a').

    Metadata never needs them, and aliases let a few hundred bytes expand to
    billions of values ("billion laughs") that exhaust memory.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _AliasError(event.start_mark)
        return super().compose_node(parent, index)


def split_front_matter(text: str, source: Path | str) -> tuple[dict, str]:
    """Separate a leading ``---`` YAML block from the transcript body."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    if len(match.group(1)) > MAX_FRONT_MATTER_CHARS:
        raise TranscriptError(source, f"front matter is {len(match.group(1)) // 1024} KB, more than metadata needs "
                              f"({MAX_FRONT_MATTER_CHARS // 1024} KB at most); keep the '---' block to 'key: value' lines")
    try:
        meta = yaml.load(match.group(1), Loader=_FrontMatterLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark else ""
        if isinstance(exc, _AliasError):
            raise TranscriptError(source, f"front matter uses YAML anchors or aliases ('&' or '*'){where}; write plain "
                                  "'key: value' lines") from None
        raise TranscriptError(source, f"front matter is not valid YAML{where}; fix the '---' block at the top of the file") from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # e.g. 'date: 2026-13-45'
        raise TranscriptError(source, f"front matter has a value that cannot be read ({exc.__class__.__name__}), such as "
                              "an impossible date; write dates as YYYY-MM-DD and fix the '---' block") from None
    if not isinstance(meta, dict):
        raise TranscriptError(source, "front matter must be 'key: value' lines between two '---' lines")
    return {str(k).strip().lower(): v for k, v in meta.items()}, text[match.end():]


def file_key(relative_path: str) -> str:
    """A file's stored identity: a hash of its path relative to the round folder, so no name is ever stored.

    Examples
    --------
    >>> file_key("WMC-01.md")
    'file-bc57976d1e9a'
    """
    return "file-" + hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:12]


def round_key(round_dir: Path) -> str:
    """The identity of a round folder (its resolved path, hashed): what scopes retiring files that are gone."""
    return "round-" + hashlib.sha256(str(Path(round_dir).resolve()).encode("utf-8")).hexdigest()[:12]


def file_label(relative_path: str, gate: Anonymiser) -> tuple[str, list[Finding]]:
    """The name a file is shown and reported under, and where the gate found personal data in it.

    A name the gate finds nothing in is shown as it is (``WMC-01.md``); any
    other is shown gated with its key, which keeps two gated names apart:
    ``Dr [PERSON].md (file-1f0c...)``. Underscores count as spaces, as people
    use them between the words of a name.
    """
    gated, found = redact_file_name(gate.redact, relative_path)
    if not found:
        return relative_path, []
    return f"{gated} ({file_key(relative_path)})", [Finding(kind, FILE_NAME) for kind in sorted(found.elements())]


def gate_metadata(values: dict[str, str], gate: Anonymiser, origin: dict[str, str]) -> tuple[dict[str, str], list[Finding]]:
    """Every metadata value redacted like body text; ``origin`` names where a key's value came from."""
    gated, findings = {}, []
    for key, value in values.items():
        gated[key], found = gate.redact(value)
        findings += [Finding(kind, f"metadata key {key}{origin.get(key, '')}") for kind in sorted(found.elements())]
    return gated, findings


def body_findings(transcript: Transcript, gate: Anonymiser) -> list[Finding]:
    """Where the gate finds personal data in a transcript's body, by line of the file."""
    return [Finding(r.kind, f"line {transcript.first_line + transcript.text.count(chr(10), 0, r.start)}")
            for r in gate.find(transcript.text)]


def personal_data_reason(findings: list[Finding]) -> str:
    """A quarantine reason naming the kinds and places of personal data, never the values.

    Examples
    --------
    >>> personal_data_reason([Finding("PERSON", "the file name"), Finding("EMAIL", "line 4")])
    "contains personal data (1 EMAIL, 1 PERSON): PERSON in the file name, EMAIL on line 4; remove it from the file, its name or its manifest row, or run with the 'redact' anonymisation policy"
    """
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(Counter(f.kind for f in findings).items()))
    places = [f"{f.kind} {'on' if f.where.startswith('line ') else 'in'} {f.where}" for f in findings[:SHOWN_FINDINGS]]
    if len(findings) > SHOWN_FINDINGS:
        places.append(f"and {len(findings) - SHOWN_FINDINGS} more")
    return (f"contains personal data ({counts}): {', '.join(places)}; remove it from the file, its name or its "
            "manifest row, or run with the 'redact' anonymisation policy")


def suggest_key(key: str) -> str | None:
    """The metadata field a misspelt key most likely means, for "did you mean ...?"; None if none is close.

    Examples
    --------
    >>> suggest_key("councl"), suggest_key("Interview ID"), suggest_key("colour")
    ('council', 'interview_id', None)
    """
    normal = re.sub(r"[\s-]+", "_", key.strip().lower())
    if normal in META_FIELDS:
        return normal
    close = difflib.get_close_matches(normal, META_FIELDS, n=1, cutoff=0.75)
    return close[0] if close else None


def read_manifest(round_dir: Path, gate: Anonymiser | None = None) -> dict[str, dict[str, str]]:
    """Metadata rows keyed by file name; a broken manifest stops the round with the line to fix.

    A message names a listed file by its gated name (``gate``, or one without
    known names), since the name in the manifest may be a person's.
    """
    return {name: row for _, name, row in _manifest_lines(round_dir, gate)}


def _manifest_lines(round_dir: Path, gate: Anonymiser | None = None) -> list[tuple[int, str, dict[str, str]]]:
    """(source line, file name, metadata) for each row of the round's manifest, checked."""
    path = round_dir / MANIFEST
    if not path.exists():
        return []
    try:
        text = decode_text(path.read_bytes(), path)
    except TranscriptError as exc:
        raise RoundError(f"{path}: {exc.reason}") from None
    sample = text[:2048]
    delimiter = ";" if sample.count(";") > sample.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    columns = [(c or "").strip().lower() for c in (reader.fieldnames or [])]
    if "file" not in columns:
        raise RoundError(f"{path}: needs a 'file' column naming each transcript (found columns: {', '.join(columns) or 'none'})")
    unknown = sorted(set(columns) - set(META_FIELDS) - {"file"} - {""})
    if unknown:
        named = ", ".join(c + (f" (did you mean '{suggest_key(c)}'?)" if suggest_key(c) else "") for c in unknown)
        raise RoundError(f"{path}: unknown column(s) {named}; allowed: file, {', '.join(META_FIELDS)}")
    rows: list[tuple[int, str, dict[str, str]]] = []
    listed: set[str] = set()
    for row in reader:
        line_number = reader.line_num  # the source line, so blank lines and quoted line breaks don't shift it
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
        name = row.pop("file", "")
        if not name:
            raise RoundError(f"{path}, line {line_number}: the 'file' cell is empty; name the transcript file or delete the row")
        if name in listed:
            shown = file_label(name, gate or Anonymiser())[0]
            raise RoundError(f"{path}, line {line_number}: file {shown!r} is listed twice; keep one row per file")
        listed.add(name)
        rows.append((line_number, name, {k: v for k, v in row.items() if v}))
    return rows


def read_known_names(round_dir: Path) -> list[str]:
    path = round_dir / KNOWN_NAMES
    if not path.exists():
        return []
    try:
        text = decode_text(path.read_bytes(), path)
    except TranscriptError as exc:
        raise RoundError(f"{path}: {exc.reason}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def list_transcript_files(round_dir: Path) -> list[Path]:
    if not round_dir.is_dir():
        raise RoundError(f"{round_dir} is not a folder; pass the folder that holds the round's transcripts")
    return [path for path, problem in _round_entries(round_dir) if problem is None]


def _round_entries(round_dir: Path) -> list[tuple[Path, str | None]]:
    """Each transcript-named entry of the folder, with why it is not read (None: it is read).

    A link is followed only to a file inside the round folder: a link out of it
    could pull any file on the machine into the round.
    """
    inside = round_dir.resolve()
    entries = []
    for path in sorted(round_dir.iterdir()):
        if path.suffix.lower() not in TRANSCRIPT_SUFFIXES or path.name.lower() in SIDE_FILES \
                or path.name.startswith((".", "~$")):
            continue
        problem = None
        if path.is_symlink():
            target = path.resolve()
            if not target.exists():
                problem = "is a link to a file that does not exist; not read"
            elif not target.is_relative_to(inside):
                problem = "is a link to a file outside the round folder; not read (copy the file into the folder instead)"
        if problem is None and not path.is_file():
            continue  # a sub-folder named like a transcript
        entries.append((path, problem))
    return entries


def round_warnings(round_dir: Path, gate: Anonymiser | None = None) -> list[str]:
    """What the research team should know about a round folder that does not stop it (one line each).

    Transcripts that are links out of the folder or to nothing, manifest rows
    naming no transcript in the folder, and a folder with no transcripts at all.
    """
    gate = gate or Anonymiser(read_known_names(round_dir))
    entries = _round_entries(round_dir)
    warnings = [f"{file_label(path.name, gate)[0]}: {problem}" for path, problem in entries if problem]
    names = [path.name for path, problem in entries if problem is None]
    for line, name, _ in _manifest_lines(round_dir, gate):
        if name not in names:
            # Only the same name in other capitals or with another suffix is suggested: FEN-04 is not FEN-03.
            meant = [n for n in names if n.lower() == name.lower() or Path(n).stem.lower() == Path(name).stem.lower()]
            hint = f" (did you mean {file_label(meant[0], gate)[0]!r}?)" if meant else ""
            warnings.append(f"{round_dir / MANIFEST}, line {line}: names {file_label(name, gate)[0]!r}, which is not a transcript in the "
                            f"round folder{hint}; correct the name or delete the row")
    if not names:
        warnings.append(f"{round_dir} holds no transcripts ({', '.join(sorted(TRANSCRIPT_SUFFIXES))} files directly "
                        "in the folder)")
    return warnings


def record_unexpected_failure(source: str, exc: BaseException, error_log: Path | None) -> str:
    """The quarantine reason for a file whose processing failed in a way qcode does not foresee.

    The traceback goes to ``error_log`` without the error's own message, which
    can quote the transcript: the log names the file, the error class and where
    in the code it happened, never the text.
    """
    kind = type(exc).__name__
    if error_log is None:
        return f"could not be processed ({kind})"
    lines = [f"{datetime.now().isoformat(timespec='seconds')} {source}: {kind} "
             "(its message is left out: it can quote the transcript)\n"]
    cause: BaseException | None = exc
    while cause is not None and len(lines) < 200:
        lines += ["Traceback (most recent call last):\n", *traceback.format_tb(cause.__traceback__),
                  f"{type(cause).__module__}.{type(cause).__qualname__}\n"]
        cause = cause.__cause__ or cause.__context__
        if cause is not None:
            lines.append("raised while handling:\n")
    try:
        error_log.parent.mkdir(parents=True, exist_ok=True)
        with open(error_log, "a", encoding="utf-8") as handle:
            handle.writelines(lines + ["\n"])
    except OSError:
        return f"could not be processed ({kind}); the full error could not be written to {error_log}"
    return f"could not be processed ({kind}); the full error is in {error_log}"


@dataclass(frozen=True)
class _RawFile:
    """A transcript file as read, before the gate: only ever held in memory."""
    path: Path
    data: bytes
    text: str
    meta: dict
    body: str


def _read_raw(path: Path, gate: Anonymiser) -> _RawFile:
    """Read a file; an error names it by its label through ``gate`` (the gate reads the name only then)."""
    try:
        data = path.read_bytes()
        raw_text = read_docx_text(path) if path.suffix.lower() == ".docx" else decode_text(data, path)
        meta, body = split_front_matter(raw_text, path)
    except TranscriptError as exc:
        raise TranscriptError(file_label(path.name, gate)[0], exc.reason) from None
    return _RawFile(path, data, raw_text, meta, body)


def _council_of(raw: _RawFile, manifest_row: dict[str, str] | None) -> str:
    return str(raw.meta.get("council") or (manifest_row or {}).get("council") or "").strip()


def read_transcript(path: Path, manifest_row: dict[str, str] | None = None, gate: Anonymiser | None = None, *,
                    round_id: str = "") -> Transcript:
    """Decode one file and resolve its metadata (front matter first, then the manifest row) through the gate.

    ``gate`` defaults to one without known names. Metadata values come back
    redacted and front-matter keys qcode does not know are dropped, their
    values unread; errors name the file by its gated label. The file's own
    council name is never redacted as a person's name.
    """
    gate = gate or Anonymiser()
    raw = _read_raw(path, gate)
    return _gated_transcript(raw, manifest_row, gate.allowing([_council_of(raw, manifest_row)]), round_id)


def _metadata_of(raw: _RawFile, manifest_row: dict[str, str] | None) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """A file's metadata before the gate: (from its manifest row, from its front matter, unknown front-matter keys)."""
    from_manifest = {k: str(v).strip() for k, v in (manifest_row or {}).items()}
    from_front = {k: str(v).strip() for k, v in raw.meta.items() if k in META_FIELDS and v not in (None, "")}
    return from_manifest, from_front, [k for k in raw.meta if k not in META_FIELDS]


def _source_hash(raw: _RawFile, manifest_row: dict[str, str] | None) -> str:
    return hashlib.sha256(raw.data + json.dumps(manifest_row or {}, sort_keys=True).encode()).hexdigest()[:32]


def _gated_transcript(raw: _RawFile, manifest_row: dict[str, str] | None, gate: Anonymiser, round_id: str) -> Transcript:
    path, body = raw.path, raw.body
    key = file_key(path.name)
    label, name_findings = file_label(path.name, gate)
    from_manifest, from_front, unknown = _metadata_of(raw, manifest_row)
    origin = {k: f" ({MANIFEST})" for k in from_manifest if k not in from_front}
    merged, meta_findings = gate_metadata({**from_manifest, **from_front}, gate, origin)
    dropped = tuple(sorted({gate.redact(k)[0] for k in unknown}))
    if not body.strip():
        raise TranscriptError(label, "is empty (no transcript text after the front matter)")
    if not merged.get("council"):
        raise TranscriptError(label, f"has no council; add 'council:' to its front matter or a row for it in {MANIFEST}")
    # A file without an interview_id is known by its name, or by its key when the name holds personal data.
    merged.setdefault("interview_id", key if name_findings else path.stem)
    return _transcript(raw, manifest_row, round_id, label, TranscriptMeta(**{k: merged.get(k, "") for k in META_FIELDS}),
                       tuple(name_findings + meta_findings), dropped)


def _transcript(raw: _RawFile, manifest_row: dict[str, str] | None, round_id: str, label: str, meta: TranscriptMeta,
                findings: tuple[Finding, ...], dropped: tuple[str, ...]) -> Transcript:
    """A file's transcript from what the gate made of its name and metadata."""
    return Transcript(source=label, meta=meta, text=raw.body, source_hash=_source_hash(raw, manifest_row),
                      file_key=file_key(raw.path.name), round_key=round_id, findings=findings,
                      first_line=raw.text[:len(raw.text) - len(raw.body)].count("\n") + 1, dropped_keys=dropped)


@lru_cache(maxsize=1)
def _gate_version() -> str:
    """The gate's code, word list, model hashes and spaCy's version: a new qcode or model gates every file again."""
    here = Path(__file__).parent
    try:
        digest = hashlib.sha256(version("spacy").encode())
    except PackageNotFoundError:
        digest = hashlib.sha256()
    for name in ("anonymise.py", "ingest.py", "schemas.py", "common_words.txt", "ner_model.py", "ner_model.sha256"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def gating_inputs(raw: _RawFile, manifest_row: dict[str, str] | None, gate: Anonymiser, round_id: str) -> str:
    """A hash of everything the gate's reading of a file's name and metadata depends on.

    The file's name and bytes, its manifest row, the round, the gate's known
    names and model, its code, and where the phrases it allows (the round's
    council names) sit in the texts it reads: so a new council elsewhere in the
    round changes the hash only of a file whose name or metadata holds it.
    """
    from_manifest, from_front, unknown = _metadata_of(raw, manifest_row)
    texts = [file_name_words(raw.path.name), *{**from_manifest, **from_front}.values(), *unknown]
    described = [_gate_version(), raw.path.name, round_id, manifest_row or {}, gate.known_names, gate.ner,
                 [gate.allowed_spans(text) for text in texts]]
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode() + b"\0" + raw.data).hexdigest()[:32]


class GateMemo:
    """What the gate made of each file's name and metadata, so a file read again unchanged is not gated again.

    One entry per file (by key): the hash of its gating inputs (``gating_inputs``)
    and the gated label, metadata, places of findings and dropped key names,
    all already through the gate, never raw text. ``entries`` is the memo as
    stored, or a function returning it, called only when a file is looked up.
    ``kept`` holds the entries of the files read this time, to store for the next.
    """

    def __init__(self, entries: dict | Callable[[], dict] | None = None):
        self._load = entries if callable(entries) else (lambda: entries or {})
        self._entries: dict | None = None
        self.kept: dict[str, dict] = {}

    def recall(self, raw: _RawFile, manifest_row: dict[str, str] | None, inputs: str,
               round_id: str) -> Transcript | None:
        """The transcript the gate gave this file before, if its gating inputs are the same; else None."""
        if self._entries is None:
            self._entries = self._load() or {}
        entry = self._entries.get(file_key(raw.path.name))
        if not isinstance(entry, dict) or entry.get("inputs") != inputs:
            return None
        try:
            return _transcript(raw, manifest_row, round_id, entry["source"], TranscriptMeta(**entry["meta"]),
                               tuple(Finding(kind, where) for kind, where in entry["findings"]),
                               tuple(entry["dropped"]))
        except (KeyError, TypeError, ValueError):
            return None  # an entry from another qcode: gate the file again

    def keep(self, transcript: Transcript, inputs: str) -> None:
        self.kept[transcript.file_key] = {
            "inputs": inputs, "source": transcript.source, "meta": asdict(transcript.meta),
            "findings": [[f.kind, f.where] for f in transcript.findings], "dropped": list(transcript.dropped_keys)}


def read_round(round_dir: Path, gate: Anonymiser | None = None, error_log: Path | None = None,
               memo: GateMemo | None = None) -> tuple[list[Transcript], list[Quarantined]]:
    """Every readable transcript of a round, and the files set aside with their reasons.

    ``gate`` defaults to one knowing the round's ``known_names.txt``; the
    round's council names (from front matter and the manifest) are added to
    what it never redacts as names, so "Irewell born and bred" keeps its
    council (steps that gate the bodies allow the councils of the transcripts returned).
    A file that fails in a way nobody foresaw is set aside too, its traceback
    written to ``error_log``: one file never stops the round.

    With a ``memo``, a file whose name, bytes, manifest row and gate are as
    when the memo was kept gets the transcript the gate gave it then, without
    gating it again; the entity model is loaded only if some file is gated.
    """
    gate = gate or Anonymiser(read_known_names(round_dir))
    round_id = round_key(round_dir)
    manifest = read_manifest(round_dir, gate)
    raws: list[_RawFile] = []
    quarantined: list[Quarantined] = []

    def set_aside(path: Path, exc: Exception) -> None:
        label = file_label(path.name, gate)[0]
        if isinstance(exc, TranscriptError):
            reason = exc.reason
        elif isinstance(exc, OSError):
            reason = f"cannot be read ({exc.strerror}); check the file's permissions"
        else:
            reason = record_unexpected_failure(label, exc, error_log)
        quarantined.append(Quarantined(label, reason, file_key(path.name)))

    for path in list_transcript_files(round_dir):
        try:
            raws.append(_read_raw(path, gate))
        except Exception as exc:  # noqa: BLE001 - the file boundary: anything sets this file aside, not the round
            set_aside(path, exc)
    gate = gate.allowing([_council_of(raw, manifest.get(raw.path.name)) for raw in raws]
                         + [row.get("council", "") for row in manifest.values()])
    memo = memo or GateMemo()
    inputs = [gating_inputs(raw, manifest.get(raw.path.name), gate, round_id) for raw in raws]
    recalled = [memo.recall(raw, manifest.get(raw.path.name), key, round_id) for raw, key in zip(raws, inputs)]
    if not all(recalled):
        gate.load()  # a missing or altered model stops the round here, not file by file
    transcripts: list[Transcript] = []
    for raw, key, transcript in zip(raws, inputs, recalled):
        try:
            transcript = transcript or _gated_transcript(raw, manifest.get(raw.path.name), gate, round_id)
        except Exception as exc:  # noqa: BLE001 - as above
            set_aside(raw.path, exc)
            continue
        memo.keep(transcript, key)
        transcripts.append(transcript)
    keys: dict[str, str] = {}
    unique: list[Transcript] = []
    for t in transcripts:
        if t.meta.key in keys:
            quarantined.append(Quarantined(t.source, f"has the same council and interview_id as {keys[t.meta.key]}; "
                                           "give each interview its own interview_id", t.file_key))
            continue
        keys[t.meta.key] = t.source
        unique.append(t)
    return unique, quarantined


def _normalise_label(label: str) -> str:
    return re.sub(r"\s*\d+$", "", " ".join(label.lower().split()))


def split_turns(text: str, interviewer_labels, respondent_labels, *, source: str = "<text>") -> list[Turn]:
    """Speaker turns with character offsets into ``text``.

    A line that starts with a known label and a colon opens a turn; following
    lines continue it. Participant codes such as P1 or R2 count as respondents.

    Examples
    --------
    >>> turns = split_turns("Q: Why?\\nA: Because.\\nIt worked.", ["q"], ["a"])
    >>> [(t.role, t.text) for t in turns]
    [('interviewer', 'Why?'), ('respondent', 'Because.\\nIt worked.')]
    """
    interviewer = {_normalise_label(l) for l in interviewer_labels}
    respondent = {_normalise_label(l) for l in respondent_labels}
    openings = []
    for match in _TURN_LABEL.finditer(text):
        label = match.group("label").strip()
        normal = _normalise_label(label)
        if normal in interviewer:
            role = INTERVIEWER
        elif normal in respondent or re.fullmatch(r"[pr]\d+", label.lower()):
            role = RESPONDENT
        else:
            continue
        openings.append((match.start(), match.end(), label, role))
    if not openings:
        raise TranscriptError(source, "has no speaker turns; start each turn on a new line with a label such as "
                              "'Interviewer:' or 'Respondent:' (other labels can be configured)")
    turns = []
    for i, (_, body_start, label, role) in enumerate(openings):
        body_end = openings[i + 1][0] if i + 1 < len(openings) else len(text)
        chunk = text[body_start:body_end]
        stripped = chunk.rstrip()
        if not stripped.strip():
            continue
        lead = len(chunk) - len(chunk.lstrip())
        turns.append(Turn(index=len(turns), speaker=label, role=role, start=body_start + lead,
                          end=body_start + len(stripped), text=stripped[lead:]))
    if not any(t.role == RESPONDENT for t in turns):
        raise TranscriptError(source, "has no respondent turns, only the interviewer's; check the speaker labels")
    return turns
