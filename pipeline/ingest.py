"""Read a round folder: file formats, decoding, metadata and speaker turns.

A round folder holds transcripts (.txt, .md, .docx), an optional
``manifest.csv`` with metadata for any file, and an optional
``known_names.txt`` with participants' real names for the anonymisation gate.
One bad file never stops the others: it is returned as quarantined with a
reason the research team can act on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from dataclasses import fields
from pathlib import Path

import yaml

from pipeline.errors import RoundError, TranscriptError
from pipeline.schemas import INTERVIEWER, RESPONDENT, Quarantined, Transcript, TranscriptMeta, Turn

TRANSCRIPT_SUFFIXES = (".txt", ".md", ".docx")
MANIFEST = "manifest.csv"
KNOWN_NAMES = "known_names.txt"
SIDE_FILES = {MANIFEST, KNOWN_NAMES, "readme.md", "readme.txt"}
META_FIELDS = tuple(f.name for f in fields(TranscriptMeta))

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
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
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            raise TranscriptError(source, "is neither UTF-8 nor Windows-1252 text; open it and save it as UTF-8") from None
    if _CONTROL_CHARS.search(text):
        raise TranscriptError(source, "contains control characters, so it is probably not a text file; save it as UTF-8 text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_docx_text(path: Path) -> str:
    import docx  # python-docx is imported lazily: most rounds are plain text
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError, PackageNotFoundError) as exc:
        raise TranscriptError(path, f"cannot be opened as a Word document ({exc.__class__.__name__}); re-save it from Word as .docx") from None
    return "\n".join(p.text for p in document.paragraphs)


def split_front_matter(text: str, source: Path | str) -> tuple[dict, str]:
    """Separate a leading ``---`` YAML block from the transcript body."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark else ""
        raise TranscriptError(source, f"front matter is not valid YAML{where}; fix the '---' block at the top of the file") from None
    if not isinstance(meta, dict):
        raise TranscriptError(source, "front matter must be 'key: value' lines between two '---' lines")
    return {str(k).strip().lower(): v for k, v in meta.items()}, text[match.end():]


def read_manifest(round_dir: Path) -> dict[str, dict[str, str]]:
    """Metadata rows keyed by file name; a broken manifest stops the round with the line to fix."""
    path = round_dir / MANIFEST
    if not path.exists():
        return {}
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
        raise RoundError(f"{path}: unknown column(s) {', '.join(unknown)}; allowed: file, {', '.join(META_FIELDS)}")
    rows: dict[str, dict[str, str]] = {}
    for row in reader:
        line_number = reader.line_num  # the source line, so blank lines and quoted line breaks don't shift it
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
        name = row.pop("file", "")
        if not name:
            raise RoundError(f"{path}, line {line_number}: the 'file' cell is empty; name the transcript file or delete the row")
        if name in rows:
            raise RoundError(f"{path}, line {line_number}: file {name!r} is listed twice; keep one row per file")
        rows[name] = {k: v for k, v in row.items() if v}
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
    return sorted(
        p for p in round_dir.iterdir()
        if p.is_file() and p.suffix.lower() in TRANSCRIPT_SUFFIXES and p.name.lower() not in SIDE_FILES
        and not p.name.startswith((".", "~$"))
    )


def read_transcript(path: Path, manifest_row: dict[str, str] | None = None) -> Transcript:
    """Decode one file and resolve its metadata: front matter first, then the manifest row."""
    data = path.read_bytes()
    source_hash = hashlib.sha256(data + json.dumps(manifest_row or {}, sort_keys=True).encode()).hexdigest()[:32]
    if path.suffix.lower() == ".docx":
        raw_text = read_docx_text(path)
    else:
        raw_text = decode_text(data, path)
    meta, body = split_front_matter(raw_text, path)
    merged = {k: str(v).strip() for k, v in (manifest_row or {}).items()}
    merged.update({k: str(v).strip() for k, v in meta.items() if k in META_FIELDS and v not in (None, "")})
    if not body.strip():
        raise TranscriptError(path, "is empty (no transcript text after the front matter)")
    if not merged.get("council"):
        raise TranscriptError(path, f"has no council; add 'council:' to its front matter or a row for it in {MANIFEST}")
    merged.setdefault("interview_id", path.stem)
    return Transcript(source=path.name, meta=TranscriptMeta(**{k: merged.get(k, "") for k in META_FIELDS}), text=body,
                      source_hash=source_hash)


def read_round(round_dir: Path) -> tuple[list[Transcript], list[Quarantined]]:
    """Every readable transcript of a round, and the files set aside with their reasons."""
    manifest = read_manifest(round_dir)
    transcripts: list[Transcript] = []
    quarantined: list[Quarantined] = []
    for path in list_transcript_files(round_dir):
        try:
            transcripts.append(read_transcript(path, manifest.get(path.name)))
        except TranscriptError as exc:
            quarantined.append(Quarantined(path.name, exc.reason))
        except OSError as exc:
            quarantined.append(Quarantined(path.name, f"cannot be read ({exc.strerror}); check the file's permissions"))
    keys: dict[str, str] = {}
    unique: list[Transcript] = []
    for t in transcripts:
        if t.meta.key in keys:
            quarantined.append(Quarantined(t.source, f"has the same council and interview_id as {keys[t.meta.key]}; give each interview its own interview_id"))
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
