"""Reviewer decisions become gold: applying a review file, and keeping gold valid across codebook versions.

Gold outranks every model suggestion. Decisions are only ever added: a later
decision supersedes an earlier one for display and training, and the whole
history stays in ``review_decisions``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline.anonymise import Anonymiser, redact_file_name
from pipeline.errors import CodebookError, ReviewFileError
from pipeline.review import ReviewFile
from pipeline.schemas import Codebook, slugify
from pipeline.store import Store

log = logging.getLogger("qcode.gold")

REVIEW, CODEBOOK_MIGRATION = "review", "codebook-migration"


@dataclass
class ImportResult:
    file: str
    applied: int = 0
    unchanged: int = 0
    unreviewed: int = 0
    stale_rows: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    remapped_codings: int = 0
    """A .qdpx's codings on ranges that are not exactly one passage, mapped to the passages they overlap."""


def _same_codes(a, b) -> bool:
    return a is not None and b is not None and set(a) == set(b)


NoteGate = Callable[[str], tuple[str, Counter]]
"""The anonymisation gate's ``redact``: a note's text with personal data replaced, and counts per kind."""


def _row_list(rows: list[int], limit: int = 10) -> str:
    """``row 4``, ``rows 4 and 9``, ``rows 4, 9, 12 and 3 more``."""
    if len(rows) == 1:
        return f"row {rows[0]}"
    shown, more = rows[:limit], len(rows) - limit
    if more > 0:
        return f"rows {', '.join(map(str, shown))} and {more} more"
    return f"rows {', '.join(map(str, shown[:-1]))} and {shown[-1]}"


def _mismatched_rows(review: ReviewFile, states: dict, exports: dict) -> list[str]:
    """Rows whose passage id cannot belong where the row says it does: another council's, or not in its export."""
    problems = []
    for r in review.rows:
        if r.passage_id not in states:
            continue
        council = states[r.passage_id][2]
        if r.council and slugify(r.council) != slugify(council):
            problems.append(f"row {r.row}: passage_id {r.passage_id} is a passage of {council} but the row's council is "
                            f"{r.council}; the id was probably pasted from another council's file: restore the row's "
                            "passage_id from the exported file, or move the row to that council's file")
        elif r.export_id in exports and r.passage_id not in exports[r.export_id]:
            problems.append(f"row {r.row}: passage_id {r.passage_id} was not in the export {r.export_id} this row "
                            "comes from; restore the row's passage_id from the exported file")
    return problems


def import_review(store: Store, review: ReviewFile, codebook: Codebook, *, reviewer: str | None = None,
                  active_coder: tuple[str, str] | None = None,
                  after_each: Callable[[int], None] | None = None,
                  redact_note: NoteGate | None = None) -> ImportResult:
    """Apply one parsed review file in a single transaction, or reject it whole.

    Each row is compared with what the export it came from (its ``export_id``)
    showed: only rows whose codes or note differ, or that the reviewer marked
    reviewed, are decisions, so a file exported before a rerun, a retrain or
    another reviewer's import decides nothing on the rows nobody touched. A row
    whose export is unknown (no id, or one this database never wrote) counts
    only when marked reviewed. Notes pass the anonymisation gate before they are
    stored. ``reviewer`` names whoever made this file's changes; a row's own
    reviewer cell is kept where the row repeats that reviewer's decision.
    ``after_each`` is called after each decision is written (progress).
    """
    redact_note = redact_note or Anonymiser().redact
    stored_name = redact_file_name(redact_note, Path(review.name).name)[0]  # may name a participant
    ids = [r.passage_id for r in review.rows]
    states = store.passage_states(ids)
    problems = [f"row {r.row}: passage_id {r.passage_id} does not exist in this database; "
                "was the file exported from another qcode database? Restore the exported id or delete the row"
                for r in review.rows if r.passage_id not in states]
    exports = store.review_export_rows(sorted({r.export_id for r in review.rows if r.export_id}))
    problems += _mismatched_rows(review, states, exports)
    if problems:
        raise ReviewFileError(review.name, sorted(problems, key=lambda p: int(p.split(":")[0].split()[1])))
    gold = store.gold(ids)
    by_reviewer = store.reviewer_decisions(ids)
    model = store.applied_codes(*active_coder, ids) if active_coder else {}
    result = ImportResult(file=review.name)
    decisions: list[dict] = []
    unmarked_edits: list[int] = []
    for row in review.rows:
        retired, stored_text, _ = states[row.passage_id]
        current = gold[row.passage_id]["codes"] if row.passage_id in gold else model.get(row.passage_id, ())
        shown = exports.get(row.export_id, {}).get(row.passage_id)  # (codes, note, reviewed) or None
        if shown is None:
            touched = row.marked_reviewed
            if not touched and not _same_codes(row.codes, current):
                unmarked_edits.append(row.row)
        else:
            touched = (not _same_codes(row.codes, shown[0]) or row.note != shown[1]
                       or (row.marked_reviewed and not shown[2]))
        if not touched:
            result.unreviewed += 1
            continue
        if retired:
            result.stale_rows.append(row.row)
            continue
        if row.text is not None and " ".join(row.text.split()) != " ".join(stored_text.split()):
            result.warnings.append(f"row {row.row}: the text was edited; edits to text are ignored "
                                   "(the transcript is the source), the codes were read as usual")
        decisions_so_far = by_reviewer.get(row.passage_id, {})
        # A note qcode exported or stored has been through the gate already; anything else goes through it now.
        known_notes = {shown[1] if shown else ""} | {note for _, note in decisions_so_far.values()}
        note = row.note
        if note not in known_notes:
            note, found = redact_note(note)
            if found:
                kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(found.items()))
                result.warnings.append(f"row {row.row}: the note held personal data ({kinds}); it was stored with "
                                       "that data replaced by its kind in brackets")

        def repeats(name: str) -> bool:
            earlier = decisions_so_far.get(name)
            return earlier is not None and _same_codes(row.codes, earlier[0]) and note == earlier[1]

        if row.reviewer and repeats(row.reviewer):
            result.unchanged += 1
            continue
        who = reviewer or row.reviewer
        if not who:
            problems.append(f"row {row.row}: no reviewer; fill the reviewer column or pass --reviewer NAME")
            continue
        if repeats(who):
            result.unchanged += 1
            continue
        newest = gold.get(row.passage_id)
        if shown is not None and newest and newest["reviewer"] != who and (
                not shown[2] or not _same_codes(newest["codes"], shown[0])):
            result.warnings.append(f"row {row.row}: {newest['reviewer']} decided this passage after the file was "
                                   f"exported; the decision by {who} in this file now stands (both stay in the history)")
        decisions.append(dict(passage_id=row.passage_id, reviewer=who, codes_before=current, codes_after=row.codes,
                              note=note, kind=REVIEW, source_file=stored_name,
                              source_sha256=review.sha256, codebook_version=codebook.version))
    if problems:
        raise ReviewFileError(review.name, problems)
    if unmarked_edits:
        result.warnings.append(
            f"{_row_list(unmarked_edits)}: the codes differ from what qcode shows now, but the file carries no export "
            "id this database wrote (the export_id column is missing, empty or changed), so these edits cannot be "
            "told from an older export's codes and were not applied; mark them reviewed (yes or x) and import the "
            "file again")
    with store.transaction():
        for i, decision in enumerate(decisions, start=1):
            store.add_decisions([decision])
            if after_each:
                after_each(i)
    result.applied = len(decisions)
    log.info("%s: %d decisions applied, %d unchanged, %d stale rows", stored_name, result.applied,
             result.unchanged, len(result.stale_rows))
    return result


def reconcile_gold(store: Store, codebook: Codebook, source: Path | str) -> int:
    """Move reviewers' codes off ids this codebook retired, using its ``retired_codes`` mapping.

    Loading a codebook that drops an id still used by gold, without a mapping
    for it, fails with a message saying how to add one. Returns the number of
    decisions migrated (each as a new decision, so history keeps the old codes).
    """
    usage = store.gold_code_usage()
    dropped = sorted(code for code in usage if code not in set(codebook.ids))
    if not dropped:
        return 0
    mapping = dict(codebook.retired_codes)
    unmapped = [code for code in dropped if code not in mapping]
    if unmapped:
        raise CodebookError(source, [
            f"code {code} is used by {usage[code]} reviewed passage(s) but is not in this codebook; add "
            f"'{code}: NEW_ID' (or '{code}: null' to drop it) under 'retired_codes' so reviewers' codes can move"
            for code in unmapped])
    migrations = []
    for old in store.reviewer_decisions_using(dropped):
        moved: list[str] = []
        for code in old["codes"]:
            target = mapping.get(code, code) if code in dropped else code
            if target and target not in moved:
                moved.append(target)
        migrations.append(dict(passage_id=old["passage_id"], reviewer=old["reviewer"], codes_before=old["codes"],
                               codes_after=tuple(moved), note=old["note"], kind=CODEBOOK_MIGRATION,
                               source_file=f"codebook {codebook.version}", source_sha256=codebook.version,
                               codebook_version=codebook.version))
    with store.transaction():
        store.add_decisions(migrations)
    log.warning("moved %d reviewer decisions off retired code(s) %s", len(migrations), ", ".join(dropped))
    return len(migrations)
