"""Reviewer decisions are never lost or invented: each file is diffed against the export it came from,
malformed files are rejected whole naming the row, and notes pass the anonymisation gate."""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import replace

import pytest

from pipeline import review_steps, steps
from pipeline.errors import ReviewFileError
from pipeline.review import parse_review_csv
from pipeline.store import SCHEMA_VERSION, Store
from conftest import query
from test_gold import decisions, read_review, save_like_excel

IDS = ("LA01", "LA02", "LA05", "BR02", "BR03")


def gold(settings) -> dict[str, tuple[str, list[str]]]:
    return {pid: (reviewer, codes) for pid, reviewer, codes in query(settings, "SELECT passage_id, reviewer, codes FROM gold")}


def other_codes(codes: str) -> str:
    """A code cell different from ``codes``."""
    return "BR02" if codes != "BR02" else "LA05"


def import_one(settings, path, **options):
    [(_, outcome)] = review_steps.import_review_files(settings, [path], **options)
    return outcome


# diffing against the export a file came from ----------------------------------------------

def test_the_export_id_is_on_every_row_and_an_unchanged_export_keeps_it(coded_world):
    _, settings = coded_world
    rows = read_review(settings)
    ids = {r["export_id"] for r in rows}
    assert len(ids) == 1
    (export_id,) = ids
    # Excel turns digit strings such as 1e5 or 0123 into numbers; a letter prefix keeps the id text.
    assert re.fullmatch(r"rx-[0-9a-f]{12}", export_id)
    before = (settings.out_dir / "westmarch" / "review.csv").read_bytes()
    [result] = [r for r in review_steps.export_reviews(settings, council="Westmarch")]
    assert result.status == "unchanged" and (settings.out_dir / "westmarch" / "review.csv").read_bytes() == before
    assert query(settings, "SELECT council, passages FROM review_exports WHERE export_id = ?", [export_id]) == [
        ("Westmarch", len(rows))]


def test_an_older_file_applies_only_its_own_edit_not_a_revert_of_a_later_decision(coded_world, tmp_path):
    _, settings = coded_world
    rows = read_review(settings)                      # both reviewers start from this export
    ana, ben = copy.deepcopy(rows), copy.deepcopy(rows)
    ana[2]["codes"] = other_codes(rows[2]["codes"])
    ben[7]["codes"] = other_codes(rows[7]["codes"])
    assert import_one(settings, save_like_excel(ana, tmp_path / "ana.csv"), reviewer="Ana").applied == 1
    review_steps.export_reviews(settings)                     # a newer export now shows Ana's decision

    result = import_one(settings, save_like_excel(ben, tmp_path / "ben.csv"), reviewer="Ben")

    assert result.applied == 1
    assert gold(settings) == {rows[2]["passage_id"]: ("Ana", [ana[2]["codes"]]),
                              rows[7]["passage_id"]: ("Ben", [ben[7]["codes"]])}


def test_after_a_recode_untouched_rows_of_an_earlier_export_are_not_decisions(coded_world, tmp_path):
    round_dir, settings = coded_world
    rows = read_review(settings)
    rows[4]["codes"] = other_codes(rows[4]["codes"])
    path = save_like_excel(rows, tmp_path / "earlier.csv")
    # Coding with the untuned base model recodes every passage, as a retrain or codebook change would.
    recoded = replace(settings, tune_encoder=False)
    run_id = steps.new_run_id()
    steps.embed_passages(recoded)
    steps.code_passages(recoded, run_id)
    steps.write_round_reports(recoded, run_id)
    newer = {r["passage_id"]: r["codes"] for r in read_review(settings)}
    moved = [r for r in rows if newer[r["passage_id"]] != r["codes"]]
    assert len(moved) >= 5                             # the recode really changed what an export shows

    result = import_one(recoded, path, reviewer="Ana")

    assert (result.applied, result.unreviewed) == (1, len(rows) - 1)
    assert gold(settings) == {rows[4]["passage_id"]: ("Ana", [rows[4]["codes"]])}


@pytest.mark.parametrize("damage", ["column removed", "id not recorded"])
def test_a_file_without_a_known_export_takes_only_rows_marked_reviewed(coded_world, tmp_path, damage):
    _, settings = coded_world
    rows = read_review(settings)
    for row in rows:
        if damage == "column removed":
            row.pop("export_id", None)
        else:
            row["export_id"] = "rx-000000000000"
    rows[2]["codes"] = other_codes(rows[2]["codes"])            # edited but not marked: cannot be told from a stale row
    rows[3]["codes"], rows[3]["reviewed"] = other_codes(rows[3]["codes"]), "x"

    result = import_one(settings, save_like_excel(rows, tmp_path / "r.csv"), reviewer="Ana")

    assert result.applied == 1
    assert gold(settings) == {rows[3]["passage_id"]: ("Ana", [rows[3]["codes"]])}
    assert any("row 4" in w and "mark them reviewed" in w for w in result.warnings), result.warnings


# notes -----------------------------------------------------------------------------------------

def test_a_changed_note_on_an_unchanged_row_is_a_decision(coded_world, tmp_path):
    _, settings = coded_world
    rows = read_review(settings)
    rows[2]["note"] = "check the budget figure with the team"
    path = save_like_excel(rows, tmp_path / "note.csv")

    result = import_one(settings, path, reviewer="Ana")

    assert result.applied == 1
    exported_codes = [c for c in rows[2]["codes"].split("; ") if c]
    assert query(settings, "SELECT codes, note FROM gold WHERE passage_id = ?", [rows[2]["passage_id"]]) == [
        (exported_codes, "check the budget figure with the team")]
    assert (import_one(settings, path, reviewer="Ana").applied, decisions(settings)) == (0, 1)

    review_steps.export_reviews(settings)                     # Ana adds to her note on the row she already decided
    again = read_review(settings)
    row = next(r for r in again if r["passage_id"] == rows[2]["passage_id"])
    assert (row["reviewed"], row["note"]) == ("yes", "check the budget figure with the team")
    row["note"] += "; figure confirmed"
    assert import_one(settings, save_like_excel(again, tmp_path / "note2.csv")).applied == 1
    assert query(settings, "SELECT reviewer, note FROM gold WHERE passage_id = ?", [rows[2]["passage_id"]]) == [
        ("Ana", "check the budget figure with the team; figure confirmed")]


RAW_NOTE = "Dr Amir Khan wants a call on 07700 900123 or amir.khan@example.org; Helen Marsh agreed"
RAW_PARTS = ("Amir", "Khan", "07700", "900123", "example.org", "Helen", "Marsh")


def test_notes_pass_the_anonymisation_gate_before_they_are_stored(coded_world, tmp_path, caplog):
    _, settings = coded_world
    rows = read_review(settings)
    rows[2]["note"] = RAW_NOTE
    rows[2]["codes"] = other_codes(rows[2]["codes"])
    path = save_like_excel(rows, tmp_path / "notes on Dr Amir Khan.csv")  # file names carry names too

    with caplog.at_level(logging.DEBUG):
        result = import_one(settings, path, reviewer="Ana")

    assert result.applied == 1
    [(note, stored_name)] = query(settings, "SELECT note, source_file FROM review_decisions")
    assert stored_name == "notes on Dr [PERSON].csv"
    assert not any(part in note for part in RAW_PARTS), note
    assert all(kind in note for kind in ("[PERSON]", "[PHONE]", "[EMAIL]"))
    said = "\n".join(result.warnings) + "\n" + caplog.text
    assert "row 4" in said and not any(part in said for part in RAW_PARTS)
    review_steps.export_reviews(settings)
    exported = (settings.out_dir / "westmarch" / "review.csv").read_text(encoding="utf-8-sig")
    assert "[PHONE]" in exported and not any(part in exported for part in RAW_PARTS)
    # The same file again: its note, through the same gate, is the stored note, so nothing new is decided.
    assert import_one(settings, path, reviewer="Ana").applied == 0


# malformed files are rejected whole, naming the row ---------------------------------------------

def test_an_unbalanced_quote_that_swallows_rows_rejects_the_file(coded_world, tmp_path):
    _, settings = coded_world
    rows = read_review(settings)
    rows[2]["note"] = "NOTE-PLACEHOLDER"
    rows[6]["codes"], rows[6]["reviewed"] = other_codes(rows[6]["codes"]), "x"   # a reviewed row further down
    path = save_like_excel(rows, tmp_path / "r.csv")
    path.write_bytes(path.read_bytes().replace(b"NOTE-PLACEHOLDER", b'"see p.4'))  # typed in a text editor

    outcome = import_one(settings, path, reviewer="Ana")

    assert isinstance(outcome, ReviewFileError)
    [problem] = outcome.problems
    assert problem.startswith("row 4:") and 'a quote (")' in problem, problem
    assert decisions(settings) == 0


def pid(n: int) -> str:
    return f"p{n:015x}"


@pytest.mark.parametrize("body, row, words", [
    # a quote opened in the last row never closes: the row's last cells would be lost
    (f'{pid(1)};LA01;fine;x\r\n{pid(2)};LA02;"see p.4;x\r\n', 3, "never closes"),
    # the opened quote closes inside a later cell: the rows between are lost
    (f'{pid(1)};LA01;"see p.4;x\r\n{pid(2)};LA02;"ok";x\r\n', 2, "quote"),
    # the opened quote closes exactly at a cell's end: two rows vanish into one note
    (f'{pid(1)};LA01;"oops;x\r\n{pid(2)};LA02;;x\r\n{pid(3)};LA05;ends here";x\r\n', 2, "2 more rows"),
])
def test_rows_swallowed_by_a_quote_are_found(body, row, words):
    data = ("passage_id;codes;note;reviewed\r\n" + body).encode("cp1252")
    with pytest.raises(ReviewFileError) as caught:
        parse_review_csv(data, "r.csv", IDS)
    [problem] = caught.value.problems
    assert problem.startswith(f"row {row}:") and words in problem, problem


def test_a_row_with_more_cells_than_the_header_is_rejected():
    data = f"passage_id;codes;note\r\n{pid(1)};LA01;ok\r\n{pid(2)};LA02;a;b;x\r\n".encode()
    with pytest.raises(ReviewFileError) as caught:
        parse_review_csv(data, "r.csv", IDS)
    assert caught.value.problems == ["row 3: has 5 cells but the header has 3; a quote (\") or a delimiter typed into a "
                                     "cell probably split it; fix the row in the spreadsheet and save as CSV again"]


def test_a_cell_over_the_field_limit_rejects_that_file_and_the_next_file_still_applies(coded_world, tmp_path):
    _, settings = coded_world
    rows = read_review(settings)
    good = copy.deepcopy(rows)
    rows[2]["note"] = "pasted transcript " * 8000           # 144,000 characters, over csv's 131,072 limit
    bad = save_like_excel(rows, tmp_path / "bad.csv", encoding="utf-8")
    good[5]["codes"] = other_codes(good[5]["codes"])

    outcomes = dict(review_steps.import_review_files(settings, [bad, save_like_excel(good, tmp_path / "good.csv")],
                                              reviewer="Ana"))

    assert isinstance(outcomes[bad], ReviewFileError)
    assert "row 4: a cell is longer than 131072 characters" in str(outcomes[bad])
    assert "pasted transcript" not in str(outcomes[bad])
    assert gold(settings) == {good[5]["passage_id"]: ("Ana", [good[5]["codes"]])}


def test_a_passage_of_another_council_in_a_councils_file_is_rejected(coded_world, tmp_path):
    _, settings = coded_world
    rows = read_review(settings)
    fenley = read_review(settings, "fenley")
    rows[1]["codes"] = other_codes(rows[1]["codes"])           # a good edit that must not apply either
    rows[2]["passage_id"], rows[2]["codes"] = fenley[0]["passage_id"], "LA05"

    outcome = import_one(settings, save_like_excel(rows, tmp_path / "mixed.csv"), reviewer="Ana")

    assert isinstance(outcome, ReviewFileError)
    assert (f"row 4: passage_id {fenley[0]['passage_id']} is a passage of Fenley but the row's council is Westmarch"
            in str(outcome))
    assert decisions(settings) == 0


# schema ------------------------------------------------------------------------------------------

def test_a_database_from_before_export_ids_is_migrated_and_keeps_its_decisions(coded_world, tmp_path):
    _, settings = coded_world
    rows = read_review(settings)
    rows[2]["codes"] = other_codes(rows[2]["codes"])
    import_one(settings, save_like_excel(rows, tmp_path / "r.csv"), reviewer="Ana")
    with Store(settings.db_path) as store:   # turn it back into a schema-2 database, as qcode 2 left it
        store.con.execute("DROP TABLE review_export_rows; DROP TABLE review_exports; "
                          "CREATE TABLE exported_codes (passage_id VARCHAR PRIMARY KEY, codes VARCHAR[] NOT NULL, "
                          "exported_at TIMESTAMPTZ NOT NULL); UPDATE schema_info SET version = 2")

    with Store(settings.db_path) as store:
        tables = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert store.con.execute("SELECT version FROM schema_info").fetchall() == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 3
    assert {"review_exports", "review_export_rows"} <= tables and "exported_codes" not in tables
    assert decisions(settings) == 1
    # The file's export is no longer known: only marked rows count, and this one is not marked.
    assert import_one(settings, tmp_path / "r.csv", reviewer="Ben").applied == 0
