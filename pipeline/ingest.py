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
import hashlib
import io
import json
import re
import zipfile
from collections import Counter
from dataclasses import fields
from pathlib import Path

import yaml

from pipeline.anonymise import Anonymiser
from pipeline.errors import RoundError, TranscriptError
from pipeline.schemas import INTERVIEWER, RESPONDENT, Finding, Quarantined, Transcript, TranscriptMeta, Turn

TRANSCRIPT_SUFFIXES = (".txt", ".md", ".docx")
MANIFEST = "manifest.csv"
KNOWN_NAMES = "known_names.txt"
SIDE_FILES = {MANIFEST, KNOWN_NAMES, "readme.md", "readme.txt"}
META_FIELDS = tuple(f.name for f in fields(TranscriptMeta))
FILE_NAME = "the file name"
SHOWN_FINDINGS = 10

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
    path = Path(relative_path)
    gated, found = gate.redact(str(path.with_suffix("")).replace("_", " "))
    if not found:
        return relative_path, []
    return f"{gated}{path.suffix} ({file_key(relative_path)})", [Finding(kind, FILE_NAME) for kind in sorted(found.elements())]


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


def read_manifest(round_dir: Path, gate: Anonymiser | None = None) -> dict[str, dict[str, str]]:
    """Metadata rows keyed by file name; a broken manifest stops the round with the line to fix.

    A message names a listed file by its gated name (``gate``, or one without
    known names), since the name in the manifest may be a person's.
    """
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
            shown = file_label(name, gate or Anonymiser())[0]
            raise RoundError(f"{path}, line {line_number}: file {shown!r} is listed twice; keep one row per file")
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


def read_transcript(path: Path, manifest_row: dict[str, str] | None = None, gate: Anonymiser | None = None, *,
                    round_id: str = "") -> Transcript:
    """Decode one file and resolve its metadata (front matter first, then the manifest row) through the gate.

    ``gate`` defaults to one without known names. Metadata values come back
    redacted and front-matter keys qcode does not know are dropped, their
    values unread; errors name the file by its gated label.
    """
    gate = gate or Anonymiser()
    key = file_key(path.name)
    label, name_findings = file_label(path.name, gate)
    try:
        data = path.read_bytes()
        raw_text = read_docx_text(path) if path.suffix.lower() == ".docx" else decode_text(data, path)
        meta, body = split_front_matter(raw_text, path)
    except TranscriptError as exc:
        raise TranscriptError(label, exc.reason) from None
    source_hash = hashlib.sha256(data + json.dumps(manifest_row or {}, sort_keys=True).encode()).hexdigest()[:32]
    from_manifest = {k: str(v).strip() for k, v in (manifest_row or {}).items()}
    from_front = {k: str(v).strip() for k, v in meta.items() if k in META_FIELDS and v not in (None, "")}
    origin = {k: f" ({MANIFEST})" for k in from_manifest if k not in from_front}
    merged, meta_findings = gate_metadata({**from_manifest, **from_front}, gate, origin)
    dropped = tuple(sorted({gate.redact(k)[0] for k in meta if k not in META_FIELDS}))
    if not body.strip():
        raise TranscriptError(label, "is empty (no transcript text after the front matter)")
    if not merged.get("council"):
        raise TranscriptError(label, f"has no council; add 'council:' to its front matter or a row for it in {MANIFEST}")
    # A file without an interview_id is known by its name, or by its key when the name holds personal data.
    merged.setdefault("interview_id", key if name_findings else path.stem)
    return Transcript(source=label, meta=TranscriptMeta(**{k: merged.get(k, "") for k in META_FIELDS}), text=body,
                      source_hash=source_hash, file_key=key, round_key=round_id,
                      findings=tuple(name_findings + meta_findings),
                      first_line=raw_text[:len(raw_text) - len(body)].count("\n") + 1, dropped_keys=dropped)


def read_round(round_dir: Path, gate: Anonymiser | None = None) -> tuple[list[Transcript], list[Quarantined]]:
    """Every readable transcript of a round, and the files set aside with their reasons.

    ``gate`` defaults to one knowing the round's ``known_names.txt``.
    """
    gate = gate or Anonymiser(read_known_names(round_dir))
    round_id = round_key(round_dir)
    manifest = read_manifest(round_dir, gate)
    transcripts: list[Transcript] = []
    quarantined: list[Quarantined] = []
    for path in list_transcript_files(round_dir):
        try:
            transcripts.append(read_transcript(path, manifest.get(path.name), gate, round_id=round_id))
        except TranscriptError as exc:
            quarantined.append(Quarantined(str(exc.path), exc.reason, file_key(path.name)))
        except OSError as exc:
            quarantined.append(Quarantined(file_label(path.name, gate)[0],
                                           f"cannot be read ({exc.strerror}); check the file's permissions",
                                           file_key(path.name)))
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
