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
