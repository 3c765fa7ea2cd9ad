"""The performance benchmark: throughput vs bare encode, warm reruns, one new interview, peak memory.

Usage: python bench/run_benchmark.py [--sizes 100 1000] [--work DIR] [--results bench/RESULTS.md]

Every figure comes from this one run on this machine; each measured piece runs
in its own process (bench/measure.py) so peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_corpus import write_interviews  # noqa: E402


def measure(*args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, str(HERE / "measure.py"), *args], capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("MEASURE ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"measure {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("MEASURE "):])


def last_run(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return json.loads(con.execute("SELECT report FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()[0])
    finally:
        con.close()


def bench_size(work: Path, size: int, add_one: bool) -> dict:
    round_dir, db, out = work / f"round-{size}", work / f"q-{size}.duckdb", work / f"reports-{size}"
    for path in (round_dir, out):
        shutil.rmtree(path, ignore_errors=True)
    for path in (db, Path(f"{db}.wal"), Path(f"{db}.lock")):
        path.unlink(missing_ok=True)
    write_interviews(round_dir, size)
    cold = measure("run", str(round_dir), str(db), str(out))
    cold_report = last_run(db)
    encode = measure("encode", str(db))
    warm = measure("run", str(round_dir), str(db), str(out))
    warm_report = last_run(db)
    passages = cold_report["embed"]["passages"]
    row = {
        "interviews": size, "passages": passages, "texts_embedded": cold_report["embed"]["embedded"],
        "cold_seconds": cold["seconds"], "cold_flow_seconds": cold_report["seconds"],
        "pipeline_passages_per_s": passages / cold["seconds"],
        "bare_encode_seconds": encode["seconds"], "bare_passages_per_s": encode["texts"] / encode["seconds"],
        "cold_peak_rss_mb": cold["peak_rss_mb"], "bare_encode_peak_rss_mb": encode["peak_rss_mb"],
        "warm_seconds": warm["seconds"], "warm_embedded": warm_report["embed"]["embedded"],
        "warm_coded": warm_report["code"]["coded"], "warm_flow_seconds": warm_report["seconds"],
    }
    row["throughput_ratio"] = row["pipeline_passages_per_s"] / row["bare_passages_per_s"]
    if add_one:
        write_interviews(round_dir, 1, start=size)
        one = measure("run", str(round_dir), str(db), str(out))
        one_report = last_run(db)
        row.update(add_one_seconds=one["seconds"], add_one_embedded=one_report["embed"]["embedded"],
                   add_one_ratio=one["seconds"] / cold["seconds"], add_one_flow_seconds=one_report["seconds"])
    print(json.dumps(row), flush=True)
    return row


def write_results(rows: list[dict], path: Path, command: str) -> None:
    lines = [
        "# qcode benchmark results", "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, CPU only (torch)",
        f"- command: `{command}`",
        "- corpus: `bench/make_corpus.py` (interviews of 16 respondent turns of 4-9 sentences drawn, seeded, "
        "from the sample round's respondent sentences: new combinations, though some passages repeat another's "
        "text, which the embedding cache encodes once; see 'distinct texts')", "",
        "`qcode run` times are whole commands in a fresh process: Prefect's temporary server (about 10 s), "
        "model load, ingest, anonymisation, segmentation, embedding, coding and reports. The bare encode is "
        "`SentenceTransformer.encode(batch_size=64)` on the same passages' distinct texts, model load excluded; "
        "the ratio compares passages per second of each.", "",
        "| interviews | passages | distinct texts | qcode run cold (s) | pipeline passages/s | bare encode passages/s | ratio | "
        "warm rerun (s) | warm embeddings | +1 interview (s) | +1 / cold | +1 embeddings | peak RSS cold (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['interviews']} | {r['passages']} | {r['texts_embedded']} | {r['cold_seconds']:.1f} | {r['pipeline_passages_per_s']:.1f} | "
            f"{r['bare_passages_per_s']:.1f} | {r['throughput_ratio']:.2f} | {r['warm_seconds']:.1f} | "
            f"{r['warm_embedded']} | {r.get('add_one_seconds', float('nan')):.1f} | {r.get('add_one_ratio', float('nan')):.3f} | "
            f"{r.get('add_one_embedded', '')} | {r['cold_peak_rss_mb']:.0f} |")
    lines += ["", "Stage seconds inside the flow (cold, warm, +1):", ""]
    for r in rows:
        lines.append(f"- {r['interviews']} interviews: cold {r['cold_flow_seconds']}; warm {r['warm_flow_seconds']}"
                     + (f"; +1 {r['add_one_flow_seconds']}" if "add_one_flow_seconds" in r else ""))
    lines += ["", "Raw figures:", "", "```", *(json.dumps(r) for r in rows), "```", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/qcode-bench"))
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [bench_size(args.work, size, add_one=(size == max(args.sizes))) for size in args.sizes]
    write_results(rows, args.results, "python " + " ".join(sys.argv))
    print(f"results in {args.results}")


if __name__ == "__main__":
    main()
