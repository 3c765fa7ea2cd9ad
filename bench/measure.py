"""Run one measured piece of work in its own process and print JSON: seconds and peak memory.

Usage:
  python bench/measure.py run ROUND_DIR DB OUT [qcode run options]   # `qcode run`, in this process
  python bench/measure.py encode DB torch|onnx|onnx-int8             # bare encoding of the DB's distinct texts

The bare encode uses the encoder qcode codes with (the base model tuned on the codebook) and no qcode code
around it: ``SentenceTransformer.encode`` for torch, the ONNX Runtime session (fp32 or int8 copy) with the
model's own tokeniser and pooling for onnx and onnx-int8. Model loading is timed apart from encoding.
"""

from __future__ import annotations

import json
from pathlib import Path
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
        qcode(["run", round_dir, "--db", db, "--out", out, *sys.argv[5:]], standalone_mode=False)
        result["seconds"] = time.perf_counter() - started
    elif mode == "encode":
        import duckdb

        from pipeline import steps
        from pipeline.codebook import load_codebook
        from pipeline.config import Settings

        db, backend = sys.argv[2], sys.argv[3]
        con = duckdb.connect(db, read_only=True)
        texts = [r[0] for r in con.execute(
            "SELECT DISTINCT ON (text_hash) text FROM passages WHERE retired_at IS NULL ORDER BY text_hash").fetchall()]
        con.close()
        settings = Settings.load(backend=backend)
        codebook = load_codebook(settings.codebook_path)
        encoder = steps.coding_encoder(settings, codebook)
        started = time.perf_counter()
        if backend == "torch":
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(encoder.model_name, device="cpu")
            loaded = time.perf_counter()
            model.encode(texts, batch_size=64, normalize_embeddings=True)
        else:
            from pipeline.onnx_backend import ONNX_FILES, OnnxTransformer

            folder = steps.inference_encoder(settings, encoder, codebook).onnx_folder
            model = encoder.model
            session = OnnxTransformer(Path(folder) / ONNX_FILES[backend])
            loaded = time.perf_counter()
            session.encode(model, texts, 64)
        done = time.perf_counter()
        result.update(seconds=done - loaded, load_seconds=loaded - started, texts=len(texts), backend=backend)
    result["peak_rss_mb"] = peak_rss_mb()
    print("MEASURE " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
