"""Reviewer decisions become gold: applying a review file, and keeping gold valid across codebook versions.

Gold outranks every model suggestion. Decisions are only ever added: a later
decision supersedes an earlier one for display and training, and the whole
history stays in ``review_decisions``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline.errors import CodebookError, ReviewFileError
from pipeline.review import ReviewFile
from pipeline.schemas import Codebook
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


def _same_codes(a, b) -> bool:
    return a is not None and b is not None and set(a) == set(b)


def import_review(store: Store, review: ReviewFile, codebook: Codebook, *, reviewer: str | None = None,
                  active_coder: tuple[str, str] | None = None,
                  after_each: Callable[[int], None] | None = None) -> ImportResult:
    """Apply one parsed review file in a single transaction, or reject it whole.

    ``reviewer`` names whoever made this file's changes; a row's own reviewer
    cell is kept where the row repeats that reviewer's earlier decision.
    ``after_each`` is called after each decision is written (progress).
    """
    ids = [r.passage_id for r in review.rows]
    states = store.passage_states(ids)
    problems = [f"row {r.row}: passage_id {r.passage_id} does not exist in this database; "
                "was the file exported from another qcode database? Restore the exported id or delete the row"
                for r in review.rows if r.passage_id not in states]
    if problems:
        raise ReviewFileError(review.name, problems)
    exported = store.exported_codes(ids)
    gold = store.gold(ids)
    by_reviewer = store.reviewer_codes()
    model = store.applied_codes(*active_coder, ids) if active_coder else {}
    result = ImportResult(file=review.name)
    decisions: list[dict] = []
    for row in review.rows:
        retired, stored_text = states[row.passage_id]
        current = gold[row.passage_id]["codes"] if row.passage_id in gold else model.get(row.passage_id, ())
        baseline = exported.get(row.passage_id, current)
        if not (row.marked_reviewed or not _same_codes(row.codes, baseline)):
            result.unreviewed += 1
            continue
        if retired:
            result.stale_rows.append(row.row)
            continue
        if row.text is not None and " ".join(row.text.split()) != " ".join(stored_text.split()):
            result.warnings.append(f"row {row.row}: the text was edited; edits to text are ignored "
                                   "(the transcript is the source), the codes were read as usual")
        decisions_so_far = by_reviewer.get(row.passage_id, {})
        if row.reviewer and _same_codes(row.codes, decisions_so_far.get(row.reviewer)):
            result.unchanged += 1
            continue
        who = reviewer or row.reviewer
        if not who:
            problems.append(f"row {row.row}: no reviewer; fill the reviewer column or pass --reviewer NAME")
            continue
        if _same_codes(row.codes, decisions_so_far.get(who)):
            result.unchanged += 1
            continue
        decisions.append(dict(passage_id=row.passage_id, reviewer=who, codes_before=current, codes_after=row.codes,
                              note=row.note, kind=REVIEW, source_file=Path(review.name).name,
                              source_sha256=review.sha256, codebook_version=codebook.version))
    if problems:
        raise ReviewFileError(review.name, problems)
    with store.transaction():
        for i, decision in enumerate(decisions, start=1):
            store.add_decisions([decision])
            if after_each:
                after_each(i)
    result.applied = len(decisions)
    log.info("%s: %d decisions applied, %d unchanged, %d stale rows", review.name, result.applied,
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
