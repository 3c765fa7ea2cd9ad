"""pipeline/store.py against real DuckDB files in tmp_path."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import duckdb
import numpy as np
import pytest

from pipeline.config import DEFAULT_INTERVIEWER_LABELS, DEFAULT_RESPONDENT_LABELS, PROJECT_ROOT
from pipeline.errors import StoreError
from pipeline.ingest import split_turns
from pipeline.schemas import SegmentedTranscript, Transcript, TranscriptMeta, text_hash
from pipeline.segment import segment_turns
from pipeline.store import SCHEMA_VERSION, Store

INTERVIEW = (
    "Interviewer: How did the partnership start?\n"
    "Respondent: We pooled budgets with the trust. The trust agreed quickly.\n"
    "Interviewer: And how did staff take it?\n"
    "Respondent: Staff were worried at first. It worked out in the end.\n"
)
# The same interview with one sentence of the first answer edited.
EDITED = INTERVIEW.replace("The trust agreed quickly.", "The trust said no at first.")


def segmented(text: str, *, council: str = "Hollins Vale", interview_id: str = "HOL-01") -> SegmentedTranscript:
    """One sentence per passage, so each sentence has its own id."""
    transcript = Transcript("x.txt", TranscriptMeta(council=council, interview_id=interview_id,
                                                    respondent_role="director", round="r1"), text)
    turns = split_turns(text, DEFAULT_INTERVIEWER_LABELS, DEFAULT_RESPONDENT_LABELS)
    passages = segment_turns(transcript, turns, max_sentences=1)
    return SegmentedTranscript(transcript, tuple(turns), tuple(passages))


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "data" / "q.duckdb") as s:
        yield s


def passage_rows(store: Store) -> dict[str, tuple]:
    """passage_id -> (text, version, retired?) for every stored passage, retired or not."""
    rows = store.con.execute("SELECT passage_id, text, version, retired_at IS NOT NULL FROM passages").fetchall()
    return {r[0]: r[1:] for r in rows}


# schema ------------------------------------------------------------------

def test_new_file_gets_every_table_and_one_schema_version(tmp_path):
    path = tmp_path / "nested" / "folder" / "q.duckdb"
    assert not path.exists()
    with Store(path) as store:
        tables = {r[0] for r in store.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_type = 'BASE TABLE'").fetchall()}
        assert tables == {"schema_info", "runs", "codes", "transcripts", "turns", "passages", "embeddings",
                          "coding_sets", "codings", "exports", "coders", "review_decisions", "review_exports",
                          "review_export_rows", "state"}
        assert store.con.execute("SELECT version FROM schema_info").fetchall() == [(SCHEMA_VERSION,)]
        assert store.count("passages") == 0
    assert path.exists()
    # Reopening migrates again without adding a second schema row.
    with Store(path) as store:
        assert store.con.execute("SELECT version FROM schema_info").fetchall() == [(SCHEMA_VERSION,)]


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "q.duckdb"
    with Store(path) as store:
        store.con.execute("INSERT INTO schema_info VALUES (?)", [SCHEMA_VERSION + 1])
    with pytest.raises(StoreError, match="newer qcode"):
        Store(path)


def test_read_only_on_missing_file_says_to_run_first(tmp_path):
    with pytest.raises(StoreError, match="no database at .*qcode run"):
        Store(tmp_path / "absent.duckdb", read_only=True)
    assert not (tmp_path / "absent.duckdb").exists()


# transcripts and passages --------------------------------------------------

def test_save_transcript_new_then_unchanged(store):
    seg = segmented(INTERVIEW)
    assert [p.text for p in seg.passages] == ["We pooled budgets with the trust.", "The trust agreed quickly.",
                                              "Staff were worried at first.", "It worked out in the end."]
    assert store.save_transcript(seg, "run-1") == "new"
    assert store.count("transcripts") == 1
    assert store.count("turns") == 4
    assert store.count("passages") == 4
    assert store.current_transcript("hollins-vale/HOL-01") == (1, seg.transcript.content_hash, None)

    # Same content again (a fresh object, as a rerun would build): nothing is written.
    assert store.save_transcript(segmented(INTERVIEW), "run-2") == "unchanged"
    assert store.count("transcripts") == 1
    assert store.count("passages") == 4
    assert store.con.execute("SELECT DISTINCT first_run_id FROM passages").fetchall() == [("run-1",)]


def test_save_transcript_changed_retires_vanished_and_keeps_unchanged(store):
    old, new = segmented(INTERVIEW), segmented(EDITED)
    old_ids = {p.text: p.passage_id for p in old.passages}
    new_ids = {p.text: p.passage_id for p in new.passages}
    store.save_transcript(old, "run-1")

    assert store.save_transcript(new, "run-2") == "changed"

    versions = store.con.execute(
        "SELECT version, retired_at IS NOT NULL, run_id FROM transcripts ORDER BY version").fetchall()
    assert versions == [(1, True, "run-1"), (2, False, "run-2")]
    assert store.current_transcript("hollins-vale/HOL-01") == (2, new.transcript.content_hash, None)
    assert store.count("turns") == 8  # 4 turns for each version

    rows = passage_rows(store)
    assert len(rows) == 5  # the retired passage is kept beside the four active ones
    vanished = old_ids["The trust agreed quickly."]
    assert rows[vanished] == ("The trust agreed quickly.", 1, True)
    added = new_ids["The trust said no at first."]
    assert rows[added] == ("The trust said no at first.", 2, False)
    for text in ("We pooled budgets with the trust.", "Staff were worried at first.", "It worked out in the end."):
        assert old_ids[text] == new_ids[text]
        assert rows[old_ids[text]] == (text, 2, False)

    # Offsets of later passages moved with the edit ("said no at first" is 2 characters longer).
    start = store.con.execute("SELECT start_char FROM passages WHERE passage_id = ?",
                              [old_ids["Staff were worried at first."]]).fetchone()[0]
    assert start == EDITED.index("Staff were worried at first.") == INTERVIEW.index("Staff were worried at first.") + 2


def test_reverting_an_edit_revives_the_retired_passage(store):
    store.save_transcript(segmented(INTERVIEW), "run-1")
    store.save_transcript(segmented(EDITED), "run-2")
    assert store.save_transcript(segmented(INTERVIEW), "run-3") == "changed"

    rows = passage_rows(store)
    revived = segmented(INTERVIEW).passages[1]
    assert rows[revived.passage_id] == ("The trust agreed quickly.", 3, False)
    gone = segmented(EDITED).passages[1]
    assert rows[gone.passage_id] == ("The trust said no at first.", 2, True)
    assert store.current_transcript("hollins-vale/HOL-01")[0] == 3
    assert store.count("transcripts", "retired_at IS NULL") == 1


def test_whitespace_only_edit_keeps_id_and_updates_text_hash(store):
    store.save_transcript(segmented(INTERVIEW), "run-1")
    spaced = INTERVIEW.replace("Staff were worried", "Staff  were worried")
    seg = segmented(spaced)
    assert store.save_transcript(seg, "run-2") == "changed"
    passage = seg.passages[2]
    assert passage.passage_id == segmented(INTERVIEW).passages[2].passage_id
    stored = store.con.execute("SELECT text, text_hash, retired_at FROM passages WHERE passage_id = ?",
                               [passage.passage_id]).fetchone()
    assert stored == ("Staff  were worried at first.", text_hash("Staff  were worried at first."), None)


def test_failed_save_rolls_back_the_whole_transcript(store):
    seg = segmented(INTERVIEW)
    broken = SegmentedTranscript(seg.transcript, seg.turns, seg.passages + seg.passages[:1])  # duplicate id
    with pytest.raises(duckdb.ConstraintException):
        store.save_transcript(broken, "run-1")
    assert (store.count("transcripts"), store.count("turns"), store.count("passages")) == (0, 0, 0)
    assert store.save_transcript(seg, "run-2") == "new"


def test_active_passages_exclude_retired_and_carry_the_question(store):
    store.save_transcript(segmented(INTERVIEW), "run-1")
    store.save_transcript(segmented(EDITED), "run-2")
    store.save_transcript(segmented("Respondent: I'll start before you ask.\n"
                                    "Interviewer: Please do.\nRespondent: Fine then.",
                                    council="Westmarch", interview_id="WMC-01"), "run-2")
    active = store.active_passages()
    got = [(p["council"], p["interview_id"], p["text"], p["question"]) for p in active]
    assert got == [
        ("Hollins Vale", "HOL-01", "We pooled budgets with the trust.", "How did the partnership start?"),
        ("Hollins Vale", "HOL-01", "The trust said no at first.", "How did the partnership start?"),
        ("Hollins Vale", "HOL-01", "Staff were worried at first.", "And how did staff take it?"),
        ("Hollins Vale", "HOL-01", "It worked out in the end.", "And how did staff take it?"),
        ("Westmarch", "WMC-01", "I'll start before you ask.", None),  # no question before it
        ("Westmarch", "WMC-01", "Fine then.", "Please do."),
    ]
    first = active[0]
    assert first["version"] == 2
    assert first["respondent_role"] == "director"
    assert first["round"] == "r1"
    assert first["text_hash"] == text_hash("We pooled budgets with the trust.")
    assert EDITED[first["start_char"]:first["end_char"]] == "We pooled budgets with the trust."


# embeddings --------------------------------------------------------------

def test_embeddings_round_trip_exactly_and_ignore_repeats(store):
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((3, 5)).astype(np.float32)
    hashes = ["h1", "h2", "h3"]
    store.save_embeddings("model-a", hashes, vectors)
    got = store.cached_embeddings("model-a", ["h3", "h1", "h2", "missing"])
    assert set(got) == {"h1", "h2", "h3"}
    for i, h in enumerate(hashes):
        assert got[h].dtype == np.float32
        assert np.array_equal(got[h], vectors[i])

    # A repeat (even with other numbers) keeps the first vector: INSERT OR IGNORE.
    store.save_embeddings("model-a", ["h1"], np.ones((1, 5), dtype=np.float32))
    assert store.count("embeddings") == 3
    assert np.array_equal(store.cached_embeddings("model-a", ["h1"])["h1"], vectors[0])
    assert store.con.execute("SELECT DISTINCT dimension FROM embeddings").fetchall() == [(5,)]

    # Keyed by model as well as text.
    assert store.cached_embeddings("model-b", hashes) == {}
    assert store.cached_embeddings("model-a", []) == {}
    store.save_embeddings("model-a", [], np.zeros((0, 5), dtype=np.float32))
    assert store.count("embeddings") == 3


def test_float64_vectors_are_stored_as_float32(store):
    vector = np.array([[0.1, 0.2, 0.3]])  # float64
    store.save_embeddings("m", ["h"], vector)
    assert np.array_equal(store.cached_embeddings("m", ["h"])["h"], vector[0].astype(np.float32))


def test_texts_still_to_embed_come_by_hash_in_the_order_asked(store):
    store.save_transcript(segmented(INTERVIEW), "run-1", "key-1")
    texts = {h: t for h, t in store.con.execute("SELECT text_hash, text FROM passages").fetchall()}
    missing = store.hashes_without_embedding("model-a")
    assert missing == sorted(texts) and len(missing) == 4
    assert store.texts_of(list(reversed(missing))) == [(h, texts[h]) for h in reversed(missing)]
    assert store.texts_of(["no-such-hash", missing[0]]) == [(missing[0], texts[missing[0]])]
    assert store.texts_of([]) == []

    store.save_embeddings("model-a", missing[:3], np.ones((3, 2), dtype=np.float32))
    assert store.hashes_without_embedding("model-a") == missing[3:]
    assert store.texts_without_embedding("model-a") == [(missing[3], texts[missing[3]])]
    assert store.hashes_without_embedding("model-b") == missing  # per model


def test_memory_limit_holds_inside_the_block_and_is_set_back_after_an_error(store):
    def limit():
        return store.con.execute("SELECT current_setting('memory_limit')").fetchone()[0]

    before = limit()
    with pytest.raises(RuntimeError):
        with store.memory_limit("64MB"):
            assert limit() == "61.0 MiB"  # 64 MB in DuckDB's units
            # Writes past the limit still land: DuckDB writes blocks out instead of refusing them.
            vectors = np.random.default_rng(0).standard_normal((30_000, 768)).astype(np.float32)
            for start in range(0, len(vectors), 5_000):
                store.save_embeddings("m", [f"h{i}" for i in range(start, start + 5_000)], vectors[start:start + 5_000])
            raise RuntimeError("the step failed")
    assert limit() == before
    assert store.count("embeddings") == 30_000


# codings -----------------------------------------------------------------

def test_save_codings_keeps_scores_above_floor_and_every_applied_code(store):
    seg = segmented(INTERVIEW)
    store.save_transcript(seg, "run-1")
    a, b = sorted(p.passage_id for p in seg.passages[:2])
    codes = ["BR01", "LA01", "LA02", "LA03"]
    scores = np.array([[0.50, 0.20, 0.31, 0.10],
                       [0.10, 0.05, 0.29, 0.30]])
    applied = np.array([[1, 0, 0, 0],
                        [0, 1, 0, 0]], dtype=np.int8)
    n = store.save_codings(coder_id="c1", codebook_version="v1", run_id="run-1", passage_ids=[a, b],
                           code_ids=codes, scores=scores, applied=applied, floor=0.3)
    assert n == 2
    # Kept: a/BR01 (0.50, applied), a/LA02 (0.31 >= 0.3), b/LA01 (0.05 < 0.3 but applied), b/LA03 (0.30 == floor).
    # Dropped: a/LA01 0.20, a/LA03 0.10, b/BR01 0.10, b/LA02 0.29.
    stored = store.con.execute(
        "SELECT passage_id, code_id, score, applied FROM codings ORDER BY passage_id, code_id").fetchall()
    assert stored == [(a, "BR01", 0.50, True), (a, "LA02", 0.31, False),
                      (b, "LA01", 0.05, True), (b, "LA03", 0.30, False)]
    assert store.con.execute(
        "SELECT passage_id, codes_applied FROM coding_sets ORDER BY passage_id").fetchall() == [(a, 1), (b, 1)]
    assert {pid for pid, _ in store.uncoded_passages("c1", "v1")}.isdisjoint({a, b})
    assert {a, b} <= {pid for pid, _ in store.uncoded_passages("c1", "v2")}
    assert {a, b} <= {pid for pid, _ in store.uncoded_passages("c2", "v1")}
    assert store.codings_for("c1", "v1") == [(a, "BR01", 0.50, True), (a, "LA02", 0.31, False),
                                             (b, "LA03", 0.30, False), (b, "LA01", 0.05, True)]


def test_codings_of_retired_passages_are_not_returned(store):
    old = segmented(INTERVIEW)
    store.save_transcript(old, "run-1")
    ids = [p.passage_id for p in old.passages]
    store.save_codings(coder_id="c1", codebook_version="v1", run_id="run-1", passage_ids=ids, code_ids=["LA01"],
                       scores=np.full((4, 1), 0.5), applied=np.ones((4, 1), dtype=np.int8), floor=0.3)
    store.save_transcript(segmented(EDITED), "run-2")
    returned = {r[0] for r in store.codings_for("c1", "v1")}
    assert returned == set(ids) - {old.passages[1].passage_id}
    assert store.count("codings") == 4  # the retired passage's coding is kept


def test_recoding_replaces_the_earlier_coding(store):
    seg = segmented(INTERVIEW)
    store.save_transcript(seg, "run-1")
    pid = seg.passages[0].passage_id
    for score, run in ((0.4, "run-1"), (0.6, "run-2")):
        store.save_codings(coder_id="c1", codebook_version="v1", run_id=run, passage_ids=[pid], code_ids=["LA01"],
                           scores=np.array([[score]]), applied=np.array([[1]]), floor=0.3)
    assert store.con.execute("SELECT score, run_id FROM codings").fetchall() == [(0.6, "run-2")]
    assert store.con.execute("SELECT run_id FROM coding_sets").fetchall() == [("run-2",)]


# locking and transactions --------------------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import sys
    from pipeline.store import Store
    store = Store(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    store.close()
""")


def test_second_process_gets_a_clear_in_use_error(tmp_path):
    path = tmp_path / "q.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], cwd=PROJECT_ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError) as caught:
            Store(path)
        message = str(caught.value)
        assert f"the database {path} is open in another program (python" in message
        assert f"pid {holder.pid}): another qcode command, a DuckDB shell or a notebook" in message
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    with Store(path) as store:  # free again once the other process is done
        assert store.count("runs") == 0


def test_transaction_rolls_back_on_exception(store):
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction():
            store.start_run("run-1", "round")
            store.save_embeddings("m", ["h"], np.ones((1, 2), dtype=np.float32))
            assert store.count("runs") == 1  # visible inside the transaction
            raise RuntimeError("boom")
    assert store.count("runs") == 0
    assert store.count("embeddings") == 0

    with store.transaction():
        store.start_run("run-2", "round")
    assert store.con.execute("SELECT run_id, status FROM runs").fetchall() == [("run-2", "running")]


def test_runs_start_and_finish(store):
    store.start_run("run-1", "/round")
    store.finish_run("run-1", "completed", {"files": 3})
    row = store.con.execute("SELECT status, round_dir, finished_at IS NOT NULL, report FROM runs").fetchone()
    assert row[:3] == ("completed", "/round", True)
    assert row[3] == '{"files": 3}'


def test_register_codebook_is_idempotent(store, codebook):
    store.register_codebook(codebook)
    store.register_codebook(codebook)
    assert store.count("codes") == len(codebook.codes) == 24
    assert store.con.execute("SELECT code_id, position FROM codes WHERE position = 0").fetchall() == [
        (codebook.codes[0].id, 0)]


# exports -----------------------------------------------------------------

def test_record_export_and_wrote_content(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = tmp_path / "reports" / "summary.csv"
    relative = absolute.relative_to(tmp_path)
    first = hashlib.sha256(b"one").hexdigest()
    assert store.wrote_content(first) is False

    store.record_export(relative, first, "run-1")
    store.record_export(relative, first, "run-1")  # recording the same content twice keeps one row
    assert store.wrote_content(first) is True
    second = hashlib.sha256(b"two").hexdigest()
    store.record_export(absolute, second, "run-2")

    assert store.wrote_content(second) is True
    assert store.wrote_content(hashlib.sha256(b"three").hexdigest()) is False
    assert store.con.execute("SELECT sha256, path, run_id FROM exports ORDER BY run_id").fetchall() == [
        (first, str(absolute), "run-1"), (second, str(absolute), "run-2")]  # paths are stored resolved
