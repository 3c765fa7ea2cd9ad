"""Shared fixtures: the real embedding model (loaded once), real codebook, small real rounds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from pipeline.codebook import load_codebook  # noqa: E402
from pipeline.config import PROJECT_ROOT, Settings  # noqa: E402

SAMPLE_ROUND = PROJECT_ROOT / "transcripts_sample"


@pytest.fixture(scope="session")
def embedder():
    """The real default model (bundled all-MiniLM-L6-v2), shared by every test."""
    from pipeline.embed import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def codebook():
    return load_codebook(Settings().codebook_path)


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings writing to a fresh database and reports folder under tmp_path."""
    return Settings.load(db_path=tmp_path / "data" / "qcode.duckdb", out_dir=tmp_path / "reports")


@pytest.fixture
def small_round(tmp_path) -> Path:
    """Three real sample interviews from three councils (.md, .txt with metadata from the manifest, .docx) and the side files."""
    round_dir = tmp_path / "round"
    round_dir.mkdir()
    for name in ("WMC-01.md", "FEN-03.txt", "HOL-02.docx", "manifest.csv", "known_names.txt"):
        shutil.copy(SAMPLE_ROUND / name, round_dir / name)
    return round_dir


def run_steps(round_dir: Path, settings: Settings):
    """Every step of ``qcode run`` in order, without Prefect: (ingest report, embed counts, code counts, exports)."""
    from pipeline import steps

    run_id = steps.new_run_id()
    steps.begin_run(settings, round_dir, run_id)
    ingest = steps.ingest_round(round_dir, settings, run_id)
    embed = steps.embed_passages(settings)
    code = steps.code_passages(settings, run_id)
    exports = steps.write_round_reports(settings, run_id)
    return ingest, embed, code, exports


@pytest.fixture(name="run_steps")
def run_steps_fixture():
    return run_steps


@pytest.fixture(scope="session")
def coded_template(tmp_path_factory, embedder) -> Path:
    """Two sample interviews (Westmarch, Fenley) coded once per session into q.duckdb and reports/."""
    base = tmp_path_factory.mktemp("coded")
    round_dir = base / "round"
    round_dir.mkdir()
    for name in ("WMC-01.md", "FEN-03.txt", "manifest.csv", "known_names.txt"):
        shutil.copy(SAMPLE_ROUND / name, round_dir / name)
    run_steps(round_dir, Settings.load(db_path=base / "q.duckdb", out_dir=base / "reports"))
    return base


@pytest.fixture
def coded_world(coded_template, tmp_path) -> tuple[Path, Settings]:
    """(round_dir, settings) on a private copy of the coded database, round and reports."""
    for name in ("round", "reports"):
        shutil.copytree(coded_template / name, tmp_path / name)
    shutil.copy(coded_template / "q.duckdb", tmp_path / "q.duckdb")
    return tmp_path / "round", Settings.load(db_path=tmp_path / "q.duckdb", out_dir=tmp_path / "reports")
