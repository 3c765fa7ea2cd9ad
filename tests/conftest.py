"""Shared fixtures: the real embedding model (loaded once), real codebook, small real rounds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The suite codes with the bundled MiniLM: tuning the default mpnet on the codebook takes 10-15 minutes on 2 cores,
# MiniLM about 2. tests/test_bundled.py checks mpnet itself, and the default's path through the pipeline.
os.environ.setdefault("QCODE_MODEL", "minilm")
# One tuned encoder for the whole suite (built on first use, about 90 s), wherever a test puts its models.
os.environ.setdefault("QCODE_ENCODERS", str(Path(__file__).resolve().parent.parent / "models" / "encoders"))

from pipeline.codebook import load_codebook  # noqa: E402
from pipeline.config import PROJECT_ROOT, Settings  # noqa: E402

SAMPLE_ROUND = PROJECT_ROOT / "transcripts_sample"


def query(db, sql: str, params=()):
    """Rows from a qcode database file (a Settings or a path), opened read-only for the test's check."""
    import duckdb

    con = duckdb.connect(str(getattr(db, "db_path", db)), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="session")
def embedder():
    """The real bundled all-MiniLM-L6-v2, the suite's model, shared by every test."""
    from pipeline.embed import load_embedder

    return load_embedder(os.environ["QCODE_MODEL"])


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


class GateSpy:
    """Which files the anonymisation gate read (by name, in order) and how often its entity model was asked for."""

    def __init__(self, monkeypatch):
        from pipeline import ingest, ner_model

        self.files: list[str] = []
        self.model_loads = 0
        gated_transcript, load_ner = ingest._gated_transcript, ner_model.load_ner

        def gated(raw, *args, **kwargs):
            self.files.append(raw.path.name)
            return gated_transcript(raw, *args, **kwargs)

        def load():
            self.model_loads += 1
            return load_ner()

        monkeypatch.setattr(ingest, "_gated_transcript", gated)
        monkeypatch.setattr(ner_model, "load_ner", load)

    def reset(self) -> None:
        self.files.clear()
        self.model_loads = 0


@pytest.fixture
def gate_spy(monkeypatch) -> GateSpy:
    """Counts the real gate's work (a spy wrapping it, not a mock: the real gate still runs)."""
    return GateSpy(monkeypatch)


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


GOLD_SET = PROJECT_ROOT / "bench" / "gold_set.csv"


def write_round_from_labelled(rows, round_dir: Path) -> dict[str, tuple[str, ...]]:
    """One transcript per labelled interview (each row a respondent turn); returns {row text: codes}."""
    round_dir.mkdir(parents=True, exist_ok=True)
    by_interview: dict[tuple[str, str], list] = {}
    for row in rows:
        by_interview.setdefault((row.council, row.interview), []).append(row)
    for (council, interview), members in sorted(by_interview.items()):
        turns = "\n".join(f"Interviewer: Could you tell me more about that?\nRespondent: {r.text}" for r in members)
        (round_dir / f"{interview}.md").write_text(
            f"---\ncouncil: {council}\ninterview_id: {interview}\nrespondent_role: manager\n---\n{turns}\n",
            encoding="utf-8")
    return {r.text: r.codes for r in rows}


@pytest.fixture(scope="session")
def gold_template(tmp_path_factory, embedder, codebook) -> Path:
    """The gold set as a coded round whose passages a reviewer ('Gold') has coded: q.duckdb, round/, reports/."""
    import csv

    from pipeline.evaluate import read_labelled_csv

    base = tmp_path_factory.mktemp("gold")
    codes_by_text = write_round_from_labelled(read_labelled_csv(GOLD_SET, codebook.ids), base / "round")
    settings = Settings.load(db_path=base / "q.duckdb", out_dir=base / "reports", models_dir=base / "models")
    run_steps(base / "round", settings)
    review_rows = []
    for review in sorted((base / "reports").glob("*/review.csv")):
        with open(review, encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                source = next(text for text in codes_by_text if row["text"] in text)
                review_rows.append({"passage_id": row["passage_id"], "codes": "; ".join(codes_by_text[source]),
                                    "reviewed": "yes"})
    gold_csv = base / "gold-review.csv"
    with open(gold_csv, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["passage_id", "codes", "reviewed"])
        writer.writeheader()
        writer.writerows(review_rows)
    from pipeline import review_steps

    [(_, result)] = review_steps.import_review_files(settings, [gold_csv], reviewer="Gold")
    assert result.applied == len(review_rows)
    return base


@pytest.fixture
def gold_world(gold_template, tmp_path) -> Settings:
    """Settings on a private copy of the reviewed gold round."""
    shutil.copytree(gold_template / "reports", tmp_path / "reports")
    shutil.copy(gold_template / "q.duckdb", tmp_path / "q.duckdb")
    # Tuning the encoder on 340 gold passages takes minutes per fold; test_train tunes on a few, as a new round has.
    return Settings.load(db_path=tmp_path / "q.duckdb", out_dir=tmp_path / "reports", models_dir=tmp_path / "models",
                         tune_encoder_on_gold=False)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (and database) for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
