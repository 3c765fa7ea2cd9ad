"""Exchange with qualitative-analysis tools (NVivo, ATLAS.ti, MAXQDA, QualCoder) through REFI-QDA.

Export: the round as a .qdpx project (codebook, interviews, every applied
coding with who made it) or the codebook alone as a .qdc. Import: a .qdpx a
team corrected in their own tool comes back as reviewer decisions, through
the same rules as a review CSV (``pipeline.gold.import_review``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pipeline.config import Settings
from pipeline.errors import QcodeError, ReviewFileError
from pipeline.gold import ImportResult, NoteGate, import_review
from pipeline.refi import (ExchangeCoding, ExchangeSource, ExchangeUser, codebook_xml, guid, project_xml, qdpx_bytes,
                           read_qdpx, source_guid)
from pipeline.report import ExportResult, write_export
from pipeline.review import ReviewFile, ReviewRow
from pipeline.schemas import Codebook, slugify
from pipeline.spreadsheet import sha256_bytes
from pipeline.store import Store

log = logging.getLogger("qcode.exchange")


def origin() -> str:
    try:
        return f"qcode {version('qcode')}"
    except PackageNotFoundError:
        return "qcode"


def coder_user(coder: dict) -> ExchangeUser:
    """A model as a user: its id, embedding model and codebook version, so the tool shows which model coded what."""
    return ExchangeUser(guid("coder", coder["coder_id"]),
                        f"qcode {coder['coder_id']} ({coder['model_id']}, codebook {coder['codebook_version']})")


def reviewer_user(name: str) -> ExchangeUser:
    return ExchangeUser(guid("reviewer", name), name)


@dataclass(frozen=True)
class ProjectExport:
    result: ExportResult
    sources: int
    codes: int
    codings: int


def _in_council(row: dict, council: str | None) -> bool:
    return council is None or row["council"].lower() == council.lower() or slugify(row["council"]) == slugify(council)


def project_bytes(store: Store, codebook: Codebook, *, council: str | None = None) -> tuple[bytes, int, int]:
    """(the .qdpx, sources, codings): every current interview of one council or all, with every applied coding.

    Codings are each coder's applied codes under this codebook version and each
    reviewer's newest decision, one selection per coder, code and passage.
    """
    transcripts = [t for t in store.exchange_transcripts() if _in_council(t, council)]
    if council is not None and not transcripts:
        known = sorted({t["council"] for t in store.exchange_transcripts()})
        raise QcodeError(f"no interviews for council {council!r}; councils in the database: {', '.join(known)}")
    sources = [ExchangeSource(source_guid(t["transcript_key"], t["version"]), f"{t['council']} {t['interview_id']}",
                              t["council"], t["council_type"] or "", t["respondent_role"] or "", t["anonymised_text"],
                              t["ingested_at"]) for t in transcripts]
    places = {p["passage_id"]: (source_guid(p["transcript_key"], p["version"]), p["start_char"], p["end_char"])
              for p in store.exchange_passages()}
    wanted = {s.guid for s in sources}
    places = {pid: place for pid, place in places.items() if place[0] in wanted}
    coders = store.coders()
    users = {u.guid: u for u in map(coder_user, coders)}
    codings = []
    for pid, code_id, coder_id, coded_at in store.applied_model_codings(codebook.version):
        if pid in places:
            codings.append(ExchangeCoding(*places[pid], code_id, guid("coder", coder_id), coded_at))
    for pid, reviewer, codes, note, decided_at in store.reviewer_codings():
        if pid in places:
            user = reviewer_user(reviewer)
            users[user.guid] = user
            codings += [ExchangeCoding(*places[pid], code, user.guid, decided_at, note)
                        for code in codes if code in codebook.ids]
    active = store.active_coder_record()
    creator = guid("coder", active["coder_id"]) if active else None
    project = project_xml(name=f"qcode {codebook.name}" + (f" {transcripts[0]['council']}" if council else ""),
                          origin=origin(), codebook=codebook, users=list(users.values()), sources=sources,
                          codings=codings, creating_user=creator)
    return qdpx_bytes(project, sources), len(sources), len(codings)


def export_qdpx(settings: Settings, *, council: str | None = None, out: Path | None = None) -> ProjectExport:
    """Write the round (or one council) as a REFI-QDA project; unchanged data leaves the file as it is."""
    from pipeline.steps import open_codebook  # steps wires every workflow; this one only borrows the codebook's opening

    with Store(settings.db_path) as store:
        codebook = open_codebook(settings, store)
        data, sources, codings = project_bytes(store, codebook, council=council)
        default = f"qcode-{slugify(council)}.qdpx" if council else "qcode.qdpx"
        path = Path(out) if out else Path(settings.out_dir) / default
        result = write_export(path, data, store.wrote_content)
        store.record_export(result.path, result.sha256, "export-qdpx")
    return ProjectExport(result, sources, len(codebook.codes), codings)


def export_qdc(settings: Settings, *, out: Path | None = None) -> tuple[ExportResult, int]:
    """Write the codebook as a REFI-QDA codebook (.qdc); returns the result and the number of codes."""
    from pipeline.codebook import load_codebook

    codebook = load_codebook(settings.codebook_path)
    path = Path(out) if out else Path(settings.out_dir) / f"codebook-{slugify(codebook.name)}.qdc"
    with Store(settings.db_path) as store:
        result = write_export(path, codebook_xml(codebook), store.wrote_content)
        store.record_export(result.path, result.sha256, "export-qdc")
    return result, len(codebook.codes)


def _qcode_source(file_guid: str, name: str, text: str | None, known: dict[str, dict]) -> str | None:
    """The qcode source a file's source is: by GUID, else by identical text, else by name (tools such as
    QualCoder give every source a new GUID when they export)."""
    if file_guid in known:
        return file_guid
    same_text = [g for g, t in known.items() if text is not None and t["anonymised_text"] == text]
    same_name = [g for g, t in known.items() if f"{t['council']} {t['interview_id']}" == name]
    for matches in (same_text, same_name):
        if len(matches) == 1:
            return matches[0]
    return None


def _qcode_code(ref: str, name: str, codebook: Codebook) -> str | None:
    """The code id a coding's code is: by GUID, else by the id its name starts with (``LA01 ...``)."""
    by_guid = {guid("code", c): c for c in codebook.ids}
    if ref in by_guid:
        return by_guid[ref]
    first = name.split()[0].upper() if name.split() else ""
    return first if first in codebook.ids else None


def import_qdpx(store: Store, data: bytes, name: str, codebook: Codebook, *, active_coder: tuple[str, str],
                redact_note: NoteGate, fallback_reviewer: str | None = None, after_each=None) -> ImportResult:
    """Apply the codings of a corrected .qdpx as reviewer decisions, or reject the file whole.

    Sources, codes and coders are recognised by the GUIDs qcode wrote or, for a
    tool that writes its own, by text, code id and name. Every user that is not a
    qcode coder is a reviewer (named as in the file's Users). A reviewer's codes
    on a passage are the codes of every selection of theirs that overlaps it: a
    range that is exactly the passage's, or any other range (counted in
    ``remapped_codings``). A selection that overlaps no passage of a known
    interview, names a code not in the codebook, or lies outside its interview's
    text rejects the file; interviews qcode did not export are left out with a
    warning. The reviewer's note on the passage is kept as it is (notes are
    edited in the review CSV).
    """
    project = read_qdpx(data, name)
    coder_users = list(map(coder_user, store.coders()))
    coder_guids, coder_names = {u.guid for u in coder_users}, {u.name for u in coder_users}
    known = {source_guid(t["transcript_key"], t["version"]): t for t in store.exchange_transcripts()}
    sources = {file_guid: _qcode_source(file_guid, source_name, text, known)
               for file_guid, (source_name, text) in project.sources.items()}
    passages: dict[str, list[tuple[int, int, str]]] = {}
    for p in store.exchange_passages():
        passages.setdefault(source_guid(p["transcript_key"], p["version"]), []).append(
            (p["start_char"], p["end_char"], p["passage_id"]))
    problems: list[str] = []
    for file_guid, (source_name, text) in sorted(project.sources.items()):
        ours = sources[file_guid]
        if ours and text is not None and text != known[ours]["anonymised_text"]:
            problems.append(f"{source_name}: its text differs from the interview qcode exported, so its positions "
                            "cannot be matched to passages; undo the edits to the text, or export from qcode again "
                            "and redo the coding there")
    decided: dict[tuple[str, str], list[str]] = {}
    remapped = skipped = 0
    for s in project.selections:
        user_name = project.users.get(s.user_guid or "")
        if s.user_guid in coder_guids or user_name in coder_names:
            continue  # the model's own codings come back as they went out
        ours = sources.get(s.source_guid)
        if ours is None:
            skipped += 1
            continue
        reviewer = user_name or fallback_reviewer
        if not reviewer:
            problems.append(f"{s.where}: the coding names no user of the project (or one without a name); set the "
                            "coder in your tool, or pass --reviewer NAME")
            continue
        length = len(known[ours]["anonymised_text"])
        if not 0 <= s.start < s.end <= length:
            problems.append(f"{s.where}: the range lies outside the interview's {length} characters; export again")
            continue
        codes = []
        for ref in s.code_guids:
            code = _qcode_code(ref, project.codes.get(ref, ""), codebook)
            if code is None:
                problems.append(f"{s.where}: code {project.codes.get(ref) or ref!r} is not a code of the qcode codebook "
                                f"{codebook.version}; code with the codebook's codes (new codes go into the codebook "
                                "YAML first)")
            elif code not in codes:
                codes.append(code)
        overlapped = [(start, end, pid) for start, end, pid in passages.get(ours, ())
                      if start < s.end and s.start < end]
        if not overlapped:
            problems.append(f"{s.where}: the range covers no respondent passage (an interviewer's question, or "
                            "the space between answers); move the coding onto the answer")
            continue
        if [(start, end) for start, end, _ in overlapped] != [(s.start, s.end)]:
            remapped += 1
        for _, _, pid in overlapped:
            held = decided.setdefault((pid, reviewer), [])
            held += [c for c in codes if c not in held]
    if problems:
        raise ReviewFileError(name, problems)
    notes = store.reviewer_decisions(sorted({pid for pid, _ in decided}))
    order = {c: i for i, c in enumerate(codebook.ids)}
    rows = tuple(ReviewRow(row=i, passage_id=pid, codes=tuple(sorted(codes, key=order.get)), marked_reviewed=True,
                           reviewer=reviewer, note=notes.get(pid, {}).get(reviewer, ((), ""))[1], text=None)
                 for i, ((pid, reviewer), codes) in enumerate(sorted(decided.items()), start=1))
    result = import_review(store, ReviewFile(name=name, sha256=sha256_bytes(data), rows=rows), codebook,
                           active_coder=active_coder, after_each=after_each, redact_note=redact_note)
    result.remapped_codings = remapped  # the command's summary line says how many
    if skipped:
        result.warnings.append(f"{skipped} codings on documents qcode did not export were left out")
    return result
