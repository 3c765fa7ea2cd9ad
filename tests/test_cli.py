"""Every command: help with an example, listed in the README, clean errors and exit codes."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import PROJECT_ROOT

def _command_paths(group, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _command_paths(command, (*prefix, name))


COMMANDS = [" ".join(path) for path in _command_paths(main)]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example_and_is_in_the_readme(command):
    result = CliRunner().invoke(main, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and f"qcode {command}" in result.output
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"^qcode {command}\b", readme, re.M), f"README has no example line for qcode {command}"


def test_codebook_command_prints_version_and_counts(codebook):
    result = CliRunner().invoke(main, ["codebook"])
    assert result.exit_code == 0
    assert result.output.strip() == (
        f"codebook {codebook.name} version {codebook.version}: 24 codes (15 leadership action, 9 barrier), "
        f"{sum(len(c.examples) for c in codebook.codes)} examples, "
        f"{sum(len(c.restatements) for c in codebook.codes)} restatements, {len(codebook.uncoded_examples)} uncoded examples"
    )


def test_codebook_command_reports_an_invalid_codebook(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("families: {LA: leadership action}\nframework_areas: [x]\ncodes:\n  - id: LA1\n")
    result = CliRunner().invoke(main, ["codebook", "--codebook", str(bad)])
    assert result.exit_code == 1
    assert "Error: codebook" in result.output and "code LA1 (#1): missing field 'label'" in result.output


def test_run_on_a_missing_folder_fails_cleanly(tmp_path):
    result = CliRunner().invoke(main, ["run", str(tmp_path / "missing"), "--db", str(tmp_path / "q.duckdb")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path / 'missing'} is not a folder; pass the folder that holds the round's transcripts"


def test_run_rejects_an_unknown_anonymisation_policy(tmp_path):
    result = CliRunner().invoke(main, ["run", str(tmp_path), "--anonymisation", "shred"])
    assert result.exit_code == 2
    assert "'shred' is not one of 'redact', 'reject'" in result.output


def _review_rows(settings, council="westmarch"):
    with open(settings.out_dir / council / "review.csv", encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(rows, path):
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_review_import_agreement_and_exports_through_the_cli(coded_world, tmp_path):
    _, settings = coded_world
    db, out = ["--db", str(settings.db_path)], ["--out", str(settings.out_dir)]
    rows = _review_rows(settings)
    for row in rows[:6]:
        row["reviewed"] = "x"
    rows[0]["codes"] = "LA05"
    ana = _write_rows(rows, tmp_path / "ana.csv")
    for row in rows[:6]:
        row["reviewer"] = ""
    ana_codes = rows[1]["codes"]
    assert ana_codes != "BR03"
    rows[1]["codes"] = "BR03"
    ben = _write_rows(rows, tmp_path / "ben.csv")
    runner = CliRunner()

    first = runner.invoke(main, ["review", "import", str(ana), "--reviewer", "Ana", *db])
    second = runner.invoke(main, ["review", "import", str(ben), "--reviewer", "Ben", *db])
    again = runner.invoke(main, ["review", "import", str(ana), "--reviewer", "Ana", *db])

    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[-1] == "1 files, 0 rejected, 6 decisions applied"
    assert second.output.splitlines()[-1] == "1 files, 0 rejected, 6 decisions applied"
    assert again.output.splitlines()[-1] == "1 files, 0 rejected, 0 decisions applied"

    agreement = runner.invoke(main, ["agreement", *db, "--out", str(tmp_path / "agreement")])
    assert agreement.exit_code == 0, agreement.output
    assert "Ana vs Ben (6 passages coded by both, 1 disagreements)" in agreement.output
    assert agreement.output.splitlines()[-1].startswith("6 reviewed passages, model micro F1 ")
    with open(tmp_path / "agreement" / "disagreements.csv", encoding="utf-8-sig") as handle:
        disagreements = list(csv.DictReader(handle))
    assert [(d["passage_id"], d["codes_a"], d["codes_b"]) for d in disagreements] == [
        (rows[1]["passage_id"], ana_codes, "BR03")]

    exported = runner.invoke(main, ["export", "matrix", *db, *out])
    assert exported.exit_code == 0
    with open(settings.out_dir / "passages_by_code.csv", encoding="utf-8-sig") as handle:
        matrix = {r["passage_id"]: r for r in csv.DictReader(handle)}
    assert matrix[rows[1]["passage_id"]]["BR03"] == "1" and matrix[rows[1]["passage_id"]]["source"] == "reviewer Ben"

    review = runner.invoke(main, ["review", "export", "--council", "Westmarch", "--order", "uncertainty", *db, *out])
    assert review.exit_code == 0, review.output
    assert "review files" in review.output.splitlines()[-1]


def test_review_import_of_a_bad_file_exits_non_zero_and_applies_nothing(coded_world, tmp_path):
    _, settings = coded_world
    rows = _review_rows(settings)
    rows[0]["codes"] = "LA05"
    rows[1]["codes"] = "XX99"
    result = CliRunner().invoke(main, ["review", "import", str(_write_rows(rows, tmp_path / "bad.csv")),
                                       "--reviewer", "Ana", "--db", str(settings.db_path)])
    assert result.exit_code == 1
    assert "row 3: unknown code 'XX99'" in result.output
    assert result.output.splitlines()[-1] == "1 files, 1 rejected, 0 decisions applied"


def test_agreement_without_reviews_says_what_to_do(coded_world):
    _, settings = coded_world
    result = CliRunner().invoke(main, ["agreement", "--db", str(settings.db_path)])
    assert result.exit_code == 1
    assert "no reviewed passages yet; import reviewers' CSVs with 'qcode review import' first" in result.output


def test_train_command_prints_the_verdict_and_writes_a_model_card(gold_world):
    # --heads-only: tuning the encoder on all 340 gold passages would take minutes (test_train tunes it on a few)
    result = CliRunner().invoke(main, ["train", "--db", str(gold_world.db_path), "--models", str(gold_world.models_dir),
                                       "--out", str(gold_world.out_dir), "--heads-only"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert re.match(r"model \d{8}T\d{6}-\w{6} from \d+ reviewed passages promoted: cross-validated macro F1 "
                    r"0\.\d{3} vs 0\.\d{3} for the active coder zero-shot:", last)
    assert "recoded" in last
    [card] = gold_world.models_dir.glob("*/card.md")
    assert f"model card: {card}" in result.output


def test_train_without_gold_says_what_to_do(coded_world):
    _, settings = coded_world
    result = CliRunner().invoke(main, ["train", "--db", str(settings.db_path), "--models", str(settings.models_dir)])
    assert result.exit_code == 1
    assert "no reviewed passages yet; import reviewers' CSVs with 'qcode review import' first" in result.output


def test_evaluate_command_prints_the_learning_curve(tmp_path):
    source = (PROJECT_ROOT / "bench" / "dev_set.csv").read_text(encoding="utf-8").splitlines()
    small = tmp_path / "labelled.csv"
    small.write_text("\n".join(source[:81]) + "\n", encoding="utf-8")  # header + 80 rows
    result = CliRunner().invoke(main, ["evaluate", "--labelled", str(small), "--split", "council",
                                       "--db", str(tmp_path / "q.duckdb"), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("held out: 80 passages (") and "split by council" in lines[0]
    assert [line.split()[0:3] for line in lines[3:7]] == [["trained", "10%", "of"], ["trained", "25%", "of"],
                                                          ["trained", "50%", "of"], ["trained", "100%", "of"]]
    assert lines[-1].startswith("trained coder macro F1 ")
    assert (tmp_path / "eval" / "learning_curve.csv").exists() and (tmp_path / "eval" / "per_code.csv").exists()


def test_themes_command_writes_themes_csv(coded_world):
    _, settings = coded_world
    result = CliRunner().invoke(main, ["themes", "--clusters", "3", "--db", str(settings.db_path),
                                       "--out", str(settings.out_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("3 themes from ")
    with open(settings.out_dir / "themes.csv", encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["theme"] for r in rows] == ["1", "2", "3"] and all(r["typical_passage_1"] for r in rows)


def test_run_on_a_folder_without_transcripts_says_what_qcode_reads(tmp_path):
    (tmp_path / "round" / "2026-spring").mkdir(parents=True)  # the transcripts sit one folder further down
    result = CliRunner().invoke(main, ["run", str(tmp_path / "round"), "--db", str(tmp_path / "q.duckdb")])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {tmp_path / 'round'} holds no transcripts; qcode reads .docx, .md, .txt "
                                     "files directly in the round folder (not in sub-folders)")


def test_run_into_a_folder_qcode_may_not_write_stops_before_any_work(small_round, tmp_path):
    # sysfs refuses new entries even to root, so this holds however the tests are run
    result = CliRunner().invoke(main, ["run", str(small_round), "--db", "/sys/qcode-test/q.duckdb",
                                       "--out", str(tmp_path / "reports")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    line = lines[0]
    assert line.startswith("Error: qcode may not write /sys/qcode-test; choose folders you can write to with --db "
                           "and --out (or QCODE_DB and QCODE_OUT), or fix the folder's permissions. The full error is in ")
    log = Path(line.rsplit(" ", 1)[1])
    assert log.parent.name == "qcode-logs"  # the database's own folder could not take it
    assert "PermissionError" in log.read_text(encoding="utf-8")
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_a_file_in_the_way_of_the_data_folder_is_named(small_round, tmp_path):
    (tmp_path / "data").write_text("not a folder")
    result = CliRunner().invoke(main, ["run", str(small_round), "--db", str(tmp_path / "data" / "q.duckdb"),
                                       "--out", str(tmp_path / "reports")])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: a file stands where qcode needs a folder ({tmp_path / 'data'}); ")


@pytest.fixture
def failing_command(tmp_path):
    """A command added to ``qcode`` for the test that raises what its body is given, with --db under tmp_path."""
    raised: list[BaseException] = []

    @main.command("fail-for-test")
    @click.option("--db", "db_path", type=click.Path(path_type=Path))
    def fail_for_test(db_path):
        from pipeline.cli import _settings

        _settings(db_path=db_path)
        raise raised[0]

    try:
        yield lambda exc: (raised.append(exc), CliRunner().invoke(
            main, ["fail-for-test", "--db", str(tmp_path / "data" / "q.duckdb")]))[1]
    finally:
        main.commands.pop("fail-for-test")


def _real_disk_full_error() -> OSError:
    try:
        with open("/dev/full", "w") as full:  # the kernel's always-full device: a real ENOSPC
            full.write("x")
            full.flush()
    except OSError as exc:
        return exc
    raise AssertionError("/dev/full accepted a write")


def test_a_full_disk_is_one_line_with_what_to_do_and_the_whole_error_in_a_log(failing_command, tmp_path):
    result = failing_command(_real_disk_full_error())
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    line = lines[0]
    assert line.startswith("Error: the disk is full; free some space (df -h shows where) and run the same command "
                           "again: what was stored before is kept and the work carries on where it stopped. "
                           f"The full error is in {tmp_path / 'data' / 'logs'}/error-")
    log = Path(line.rsplit(" ", 1)[1])
    assert "Traceback (most recent call last)" in log.read_text(encoding="utf-8")
    assert "No space left on device" in log.read_text(encoding="utf-8")


def test_an_unexpected_error_is_one_line_naming_the_log_with_the_traceback(failing_command, tmp_path):
    result = failing_command(KeyError("council"))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    line = lines[0]
    assert line.startswith("Error: qcode stopped on an unexpected error (KeyError). The full error is in ")
    text = Path(line.rsplit(" ", 1)[1]).read_text(encoding="utf-8")
    assert "raise raised[0]" in text and "KeyError: 'council'" in text


@pytest.mark.parametrize("message", [
    'IO Error: Could not write file "data/qcode.duckdb.wal": No space left on device',
    'IO Error: Cannot open file "reports/x.csv": Permission denied',
])
def test_duckdb_reports_of_machine_failures_are_explained(message):
    from pipeline.errors import explain_system_error

    explained = explain_system_error(RuntimeError(message))
    assert explained.startswith("the disk is full" if "space" in message else "qcode may not write to a folder it needs")


@pytest.mark.parametrize("command", [
    ["evaluate"], ["themes"], ["agreement"], ["report"],
])
def test_every_command_that_opens_the_database_waits_for_its_lock(tmp_path, command):
    """A `qcode run` started during `qcode evaluate` used to die inside DuckDB; now each command takes the lock."""
    from pipeline.lock import writer_lock

    db = tmp_path / "data" / "q.duckdb"
    with writer_lock(db, purpose="qcode run round-2"):
        result = CliRunner().invoke(main, [*command, "--db", str(db), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: another qcode command is using {db} (pid {os.getpid()}, qcode run round-2, ")
    assert "--wait SECONDS" in result.output
    assert not db.exists()


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_a_damaged_database_is_named_before_any_work_and_left_in_place(coded_world, tmp_path, damage):
    round_dir, settings = coded_world
    data = settings.db_path.read_bytes()
    damaged = data[: len(data) // 3] if damage == "truncated" else os.urandom(len(data))
    settings.db_path.write_bytes(damaged)
    result = CliRunner().invoke(main, ["run", str(round_dir), "--db", str(settings.db_path),
                                       "--out", str(settings.out_dir)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    line = lines[0]
    assert line.startswith(f"Error: the database {settings.db_path} is damaged or is not a qcode database (")
    assert "restore it from your backup, or move it aside" in line
    assert "starting Prefect" not in result.output  # found before the server starts
    assert settings.db_path.read_bytes() == damaged  # never deleted or repaired
