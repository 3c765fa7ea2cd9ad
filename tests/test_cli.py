"""Every command: help with an example, listed in the README, clean errors and exit codes."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import PROJECT_ROOT

COMMANDS = sorted(main.commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example_and_is_in_the_readme(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and f"qcode {command}" in result.output
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"^qcode {command}\b", readme, re.M), f"README has no example line for qcode {command}"


def test_codebook_command_prints_version_and_counts(codebook):
    result = CliRunner().invoke(main, ["codebook"])
    assert result.exit_code == 0
    assert result.output.strip() == (
        f"codebook {codebook.name} version {codebook.version}: 24 codes (15 leadership action, 9 barrier), "
        f"{sum(len(c.examples) for c in codebook.codes)} examples, {len(codebook.uncoded_examples)} uncoded examples"
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
