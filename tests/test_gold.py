"""Reviewer CSVs through a real coded database: import, rejection, history, gold outranking the model."""

from __future__ import annotations

import csv
import io
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import yaml

from pipeline import review_steps
from pipeline.errors import CodebookError
from conftest import query, run_steps


def run_all(round_dir, settings):
    ingest, _, code, _ = run_steps(round_dir, settings)
    return ingest, code


def read_review(settings, council="westmarch"):
    with open(settings.out_dir / council / "review.csv", encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def save_like_excel(rows, path, *, delimiter=";", encoding="cp1252"):
    """What Excel on a UK Windows machine writes for 'CSV (semicolon)': cp1252, CRLF, reordered columns."""
    columns = list(rows[0])
    columns = columns[::-1]  # a reviewer dragged columns around
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(columns + ["my notes"])
    for row in rows:
        writer.writerow([row[c] for c in columns] + ["extra column"])
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def decisions(settings):
    return query(settings, "SELECT count(*) FROM review_decisions")[0][0]


def test_excel_round_trip_applies_corrections_as_gold(coded_world, tmp_path):
    round_dir, settings = coded_world
    rows = read_review(settings)
    rows[3]["codes"] = "la02, br03 "            # changed codes, lower case, comma, trailing space
    rows[4]["reviewed"] = "X"                    # confirmed the model's codes as they are
    rows[5]["codes"], rows[5]["reviewed"] = "", "yes"
    rows[5]["note"] = "small talk – café"       # cp1252 dash and accent
    rows[6]["text"] = rows[6]["text"] + " (edited)"
    rows[6]["reviewed"] = "y"
    path = save_like_excel(rows, tmp_path / "westmarch-reviewed.csv")

    [(_, result)] = review_steps.import_review_files(settings, [path], reviewer="Ana")

    assert (result.applied, result.unchanged, result.stale_rows) == (4, 0, [])
    assert result.unreviewed == len(rows) - 4
    assert result.warnings == [f"row 8: the text was edited; edits to text are ignored (the transcript is the source), "
                               "the codes were read as usual"]
    stored = query(settings, "SELECT passage_id, reviewer, codes_before, codes_after, note, source_file, "
                             "length(source_sha256) FROM review_decisions ORDER BY decision_id")
    by_id = {row[0]: row for row in stored}
    changed = by_id[rows[3]["passage_id"]]
    assert changed[1] == "Ana" and changed[3] == ["LA02", "BR03"]
    assert changed[2] == [c.strip() for c in read_review_codes(coded_world, rows[3]["passage_id"])]
    assert by_id[rows[5]["passage_id"]][3] == [] and by_id[rows[5]["passage_id"]][4] == "small talk – café"
    assert changed[5] == "westmarch-reviewed.csv" and changed[6] == 64
    assert by_id[rows[6]["passage_id"]][3] == [c for c in rows[6]["codes"].split("; ") if c]

    review_steps.export_reviews(settings)
    exported = {r["passage_id"]: r for r in read_review(settings)}
    assert exported[rows[3]["passage_id"]]["codes"] == "LA02; BR03"
    assert exported[rows[3]["passage_id"]]["reviewed"] == "yes"
    assert exported[rows[3]["passage_id"]]["reviewer"] == "Ana"
    assert exported[rows[5]["passage_id"]]["codes"] == ""
    assert exported[rows[5]["passage_id"]]["note"] == "small talk – café"


def read_review_codes(coded_world, passage_id):
    """The codes qcode exported for a passage before any review (from the template's report)."""
    _, settings = coded_world
    for row in read_review(settings):
        if row["passage_id"] == passage_id:
            return [c for c in row["codes"].split("; ") if c]
    raise KeyError(passage_id)


def test_importing_the_same_file_twice_changes_nothing(coded_world, tmp_path):
    _, settings = coded_world
    rows = read_review(settings)
    rows[2]["codes"] = "LA05"
    path = save_like_excel(rows, tmp_path / "r.csv", delimiter=",", encoding="utf-8-sig")
    review_steps.import_review_files(settings, [path], reviewer="Ana")
    before = decisions(settings)

    [(_, again)] = review_steps.import_review_files(settings, [path], reviewer="Ana")

    assert before == 1 and decisions(settings) == 1
    assert (again.applied, again.unchanged) == (0, 1)


def test_a_later_decision_supersedes_and_history_stays(coded_world, tmp_path):
    _, settings = coded_world
    rows = read_review(settings)
    passage = rows[2]["passage_id"]
    rows[2]["codes"] = "LA05"
    review_steps.import_review_files(settings, [save_like_excel(rows, tmp_path / "first.csv")], reviewer="Ana")
    rows[2]["codes"], rows[2]["reviewer"] = "LA05; LA08", "Ben"
    review_steps.import_review_files(settings, [save_like_excel(rows, tmp_path / "second.csv")])

    history = query(settings, "SELECT reviewer, codes_before, codes_after, source_file FROM review_decisions "
                              "WHERE passage_id = ? ORDER BY decision_id", [passage])
    assert history[0][0] == "Ana" and history[0][2] == ["LA05"] and history[0][3] == "first.csv"
    assert history[1] == ("Ben", ["LA05"], ["LA05", "LA08"], "second.csv")
    assert query(settings, "SELECT reviewer, codes FROM gold WHERE passage_id = ?", [passage]) == [("Ben", ["LA05", "LA08"])]


@pytest.mark.parametrize("damage, message", [
    (lambda rows: rows[4].update(codes="LA1; BR03"),
     "row 6: unknown code 'LA1' (nearest valid ids: LA01, LA10, LA11)"),
    (lambda rows: rows[4].update(passage_id="p000000000000000"),
     "row 6: passage_id p000000000000000 does not exist in this database"),
    (lambda rows: rows[4].update(passage_id=rows[3]["passage_id"]),
     f"row 6: passage_id {{pid}} also appears in row 5; keep one row per passage"),
])
def test_a_bad_file_is_rejected_whole_and_applies_nothing(coded_world, tmp_path, damage, message):
    _, settings = coded_world
    rows = read_review(settings)
    rows[2]["codes"] = "LA05"          # a good correction that must not be applied either
    damage(rows)
    path = save_like_excel(rows, tmp_path / "bad.csv")

    [(_, outcome)] = review_steps.import_review_files(settings, [path], reviewer="Ana")

    assert "bad.csv was rejected and nothing from it was applied" in str(outcome)
    assert message.format(pid=rows[3]["passage_id"]) in str(outcome)
    assert decisions(settings) == 0


def test_a_file_without_passage_ids_is_rejected(coded_world, tmp_path):
    _, settings = coded_world
    path = tmp_path / "no-ids.csv"
    path.write_text("council;codes;reviewed\r\nWestmarch;LA01;x\r\n", encoding="utf-8")
    [(_, outcome)] = review_steps.import_review_files(settings, [path], reviewer="Ana")
    assert "there is no 'passage_id' column" in str(outcome)
    assert decisions(settings) == 0


def test_a_reviewed_row_needs_a_reviewer(coded_world, tmp_path):
    _, settings = coded_world
    rows = read_review(settings)
    rows[2]["codes"] = "LA05"
    [(_, outcome)] = review_steps.import_review_files(settings, [save_like_excel(rows, tmp_path / "r.csv")])
    assert "row 4: no reviewer; fill the reviewer column or pass --reviewer NAME" in str(outcome)
    assert decisions(settings) == 0


def test_rows_of_retired_passages_are_stale_and_the_rest_applies(coded_world, tmp_path):
    round_dir, settings = coded_world
    rows = read_review(settings)
    target = next(i for i, r in enumerate(rows) if "ten-year ambition" in r["text"])
    rows[target]["codes"] = "LA09"
    rows[1]["codes"] = "LA05"
    path = save_like_excel(rows, tmp_path / "r.csv")
    transcript = round_dir / "WMC-01.md"
    transcript.write_text(transcript.read_text().replace("ten-year ambition", "twelve-year ambition"))
    run_all(round_dir, settings)

    [(_, result)] = review_steps.import_review_files(settings, [path], reviewer="Ana")

    assert result.stale_rows == [target + 2]
    assert result.applied == 1
    assert query(settings, "SELECT passage_id FROM gold") == [(rows[1]["passage_id"],)]


def test_gold_survives_reruns_and_a_codebook_change_needs_a_mapping(coded_world, tmp_path):
    round_dir, settings = coded_world
    rows = read_review(settings)
    passage = rows[2]["passage_id"]
    rows[2]["codes"] = "LA15; LA05"
    review_steps.import_review_files(settings, [save_like_excel(rows, tmp_path / "r.csv")], reviewer="Ana")
    run_all(round_dir, settings)
    assert {r["passage_id"]: r["codes"] for r in read_review(settings)}[passage] == "LA15; LA05"

    raw = yaml.safe_load(settings.codebook_path.read_text(encoding="utf-8"))
    raw["codes"] = [c for c in raw["codes"] if c["id"] != "LA15"]
    changed = tmp_path / "codebook-v2.yaml"
    changed.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    # Each codebook version gets its own tuned encoder (80 s to build); what is tested here is the gold, so the
    # changed codebook codes with the base model.
    new_settings = replace(settings, codebook_path=changed, tune_encoder=False)
    with pytest.raises(CodebookError, match=r"code LA15 is used by 1 reviewed passage\(s\) but is not in this codebook; "
                                            r"add 'LA15: NEW_ID' \(or 'LA15: null' to drop it\) under 'retired_codes'"):
        run_all(round_dir, new_settings)

    raw["retired_codes"] = {"LA15": "LA04"}
    changed.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    _, code = run_all(round_dir, new_settings)

    assert code["coded"] > 0  # a new codebook version recodes every passage from cached embeddings
    assert query(settings, "SELECT codes, reviewer FROM gold WHERE passage_id = ?", [passage]) == [(["LA04", "LA05"], "Ana")]
    history = query(settings, "SELECT kind, codes_before, codes_after FROM review_decisions WHERE passage_id = ? "
                              "ORDER BY decision_id", [passage])
    assert history == [("review", history[0][1], ["LA15", "LA05"]), ("codebook-migration", ["LA15", "LA05"], ["LA04", "LA05"])]
    assert {r["passage_id"]: r["codes"] for r in read_review(settings)}[passage] == "LA04; LA05"


def test_a_killed_import_leaves_the_database_as_before(coded_world, tmp_path):
    _, settings = coded_world
    rows = read_review(settings)
    for row in rows[:20]:
        row["codes"] = "LA05"
    path = save_like_excel(rows, tmp_path / "r.csv")
    script = textwrap.dedent(f"""
        import sys, time
        from pipeline import review_steps
        from pipeline.config import Settings
        settings = Settings.load(db_path={str(settings.db_path)!r}, out_dir={str(settings.out_dir)!r})
        def pause(i):
            if i == 10:
                print("mid-import", flush=True)
                time.sleep(600)
        review_steps.import_review_files(settings, [{str(path)!r}], reviewer="Ana", after_each=pause)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "mid-import"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)

    assert process.returncode == -signal.SIGKILL
    assert decisions(settings) == 0
    [(_, result)] = review_steps.import_review_files(settings, [path], reviewer="Ana")
    assert result.applied == 20 and decisions(settings) == 20
