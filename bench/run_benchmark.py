"""The performance benchmark: throughput vs bare encode, warm reruns, one new interview, peak memory.

Usage: python bench/run_benchmark.py [--sizes 100 1000] [--work DIR] [--results bench/RESULTS.md] [--no-dask]

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
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from make_corpus import write_interviews  # noqa: E402
from pipeline.onnx_backend import MODEL_ID_TAGS  # noqa: E402


def measure(*args: str, env: dict | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_LOGGING_LEVEL": "WARNING", **(env or {})}
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


def active_codings(db: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """{passage id: (top-scoring code, applied codes)} under the database's active coder."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        coder = con.execute("SELECT coder_id FROM coders WHERE activated_at IS NOT NULL "
                            "ORDER BY activated_at DESC LIMIT 1").fetchone()[0]
        rows = con.execute(
            "SELECT p.passage_id, arg_max(c.code_id, c.score), "
            "       list(c.code_id ORDER BY c.code_id) FILTER (WHERE c.applied) "
            "FROM passages p LEFT JOIN codings c ON c.passage_id = p.passage_id AND c.coder_id = ? "
            "WHERE p.retired_at IS NULL GROUP BY p.passage_id", [coder]).fetchall()
    finally:
        con.close()
    return {pid: (top, tuple(applied or ())) for pid, top, applied in rows}


def agreement(db_a: Path, db_b: Path) -> dict:
    """Share of passages with identical applied codes, and with the same top code, between two databases."""
    a, b = active_codings(db_a), active_codings(db_b)
    common = sorted(set(a) & set(b))
    scored = [pid for pid in common if a[pid][0] is not None and b[pid][0] is not None]
    return {"passages": len(common),
            "identical_codes": sum(a[p][1] == b[p][1] for p in common) / len(common),
            "identical_top1": sum(a[p][0] == b[p][0] for p in scored) / len(scored) if scored else float("nan")}


def fresh(work: Path, name: str) -> tuple[Path, Path]:
    db, out = work / f"{name}.duckdb", work / f"reports-{name}"
    shutil.rmtree(out, ignore_errors=True)
    for path in (db, Path(f"{db}.wal"), Path(f"{db}.lock")):
        path.unlink(missing_ok=True)
    return db, out


def flow_total(db: Path) -> float:
    return last_run(db)["seconds"]["total"]


def backend_of(model_id: str) -> str:
    """The backend whose vectors a model id names (``pipeline.onnx_backend.onnx_model_id``)."""
    return next((backend for backend, tag in MODEL_ID_TAGS.items() if f"+{tag}@" in model_id), "torch")


def bench_size(work: Path, size: int, largest: bool, smallest: bool, dask: bool) -> dict:
    round_dir = work / f"round-{size}"
    shutil.rmtree(round_dir, ignore_errors=True)
    write_interviews(round_dir, size)
    db, out = fresh(work, f"q-{size}")
    cold = measure("run", str(round_dir), str(db), str(out))
    cold_report = last_run(db)
    backend = backend_of(cold_report["embed"]["model_id"])
    encode = measure("encode", str(db), backend)
    # bare torch on the same texts, for the ONNX backends' speed-up: once, on the smallest corpus
    torch_encode = encode if backend == "torch" else measure("encode", str(db), "torch") if smallest else None
    warm = measure("run", str(round_dir), str(db), str(out))
    warm_report = last_run(db)
    passages = cold_report["embed"]["passages"]
    row = {
        "interviews": size, "passages": passages, "texts_embedded": cold_report["embed"]["embedded"],
        "model_id": cold_report["embed"]["model_id"], "backend": backend, "cold_seconds": cold["seconds"], "cold_flow_seconds": cold_report["seconds"],
        "bare_encode_seconds": encode["seconds"], "bare_load_seconds": encode["load_seconds"],
        "torch_bare_encode_seconds": torch_encode and torch_encode["seconds"],
        "speedup_vs_torch_bare": torch_encode and torch_encode["seconds"] / encode["seconds"],
        "cold_peak_rss_mb": cold["peak_rss_mb"], "bare_encode_peak_rss_mb": encode["peak_rss_mb"],
        "warm_seconds": warm["seconds"], "warm_embedded": warm_report["embed"]["embedded"],
        "warm_coded": warm_report["code"]["coded"], "warm_flow_seconds": warm_report["seconds"],
    }
    # the same distinct texts on the same backend: the ratio is bare encode's time over the whole command's
    row["throughput_ratio"] = (encode["seconds"] + encode["load_seconds"]) / cold["seconds"]
    row["flow_throughput_ratio"] = (encode["seconds"] + encode["load_seconds"]) / cold_report["seconds"]["total"]
    if smallest:  # backends against each other: the smallest corpus says as much as the largest, in a fraction
        if backend != "torch":
            torch_db, torch_out = fresh(work, f"q-{size}-torch")
            measure("run", str(round_dir), str(torch_db), str(torch_out), "--backend", "torch")
            row["agreement_with_torch"] = agreement(torch_db, db)
        int8_db, int8_out = fresh(work, f"q-{size}-int8")
        int8_cold = measure("run", str(round_dir), str(int8_db), str(int8_out), "--backend", "onnx-int8")
        int8_encode = measure("encode", str(db), "onnx-int8")
        row.update(int8_cold_seconds=int8_cold["seconds"], int8_flow_seconds=last_run(int8_db)["seconds"],
                   int8_bare_encode_seconds=int8_encode["seconds"],
                   int8_speedup_bare=torch_encode["seconds"] / int8_encode["seconds"],
                   int8_agreement=agreement(db, int8_db), int8_peak_rss_mb=int8_cold["peak_rss_mb"])
    if largest:
        write_interviews(round_dir, 1, start=size)
        one = measure("run", str(round_dir), str(db), str(out))
        one_report = last_run(db)
        row.update(add_one_seconds=one["seconds"], add_one_embedded=one_report["embed"]["embedded"],
                   add_one_ratio=one["seconds"] / cold["seconds"], add_one_flow_seconds=one_report["seconds"],
                   add_one_flow_ratio=one_report["seconds"]["total"] / cold_report["seconds"]["total"],
                   add_one_reports_written=sum(e["status"] != "unchanged" for e in one_report["exports"]),
                   reports=len(one_report["exports"]))
        if dask:
            row.update(dask=bench_dask(work, round_dir, db, size))
    print(json.dumps(row), flush=True)
    return row


def bench_dask(work: Path, round_dir: Path, reference_db: Path, size: int) -> dict:
    """The same round with encoding and scoring on a local Dask cluster of 2 single-threaded worker processes."""
    port = 8786
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", str(port),
                                  "--dashboard-address", ":0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}",
                                "--nworkers", "2", "--nthreads", "1", "--memory-limit", "6GiB"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=one_thread, cwd=ROOT)
    try:
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        db, out = fresh(work, f"q-{size}-dask")
        run = measure("run", str(round_dir), str(db), str(out), "--dask", f"tcp://127.0.0.1:{port}")
        return {"workers": 2, "threads_per_worker": 1, "seconds": run["seconds"], "flow_seconds": last_run(db)["seconds"],
                "agreement_with_in_process": agreement(reference_db, db)}
    finally:
        workers.terminate()
        scheduler.terminate()
        workers.wait(30)
        scheduler.wait(30)


def bench_sample(work: Path) -> dict:
    """Agreement of each ONNX backend with torch on the sample round."""
    sample = ROOT / "transcripts_sample"
    dbs = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        db, out = fresh(work, f"sample-{backend}")
        measure("run", str(sample), str(db), str(out), "--backend", backend)
        dbs[backend] = db
    return {backend: agreement(dbs["torch"], dbs[backend]) for backend in ("onnx", "onnx-int8")}


def write_results(rows: list[dict], sample: dict, path: Path, command: str) -> None:
    big, small = rows[-1], rows[0]
    lines = [
        "# qcode benchmark results", "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, CPU only",
        f"- command: `{command}`",
        f"- encoder: `{big['model_id']}` (the default, tuned on the codebook), backend chosen by `auto`",
        "- corpus: `bench/make_corpus.py` (interviews of 16 respondent turns of 4-9 sentences drawn, seeded, "
        "from the sample round's respondent sentences; some passages repeat another's text, which the embedding "
        "cache encodes once, so every comparison below is on the same distinct texts)", "",
        "`qcode run` times are whole commands in a fresh process (Prefect's temporary server, imports, model load, "
        "ingest with anonymisation and segmentation, embedding, coding, reports); flow times are inside the flow. "
        "The bare encode is the same encoder on the same distinct texts on the same backend with nothing around "
        "it, model load timed apart; throughput ratio = (bare load + encode) / qcode run.", "",
        "| interviews | passages | distinct texts | backend | qcode run cold (s) | flow (s) | bare encode (s) | "
        "ratio (command) | ratio (flow) | bare torch encode (s) | speed-up vs torch | warm rerun (s) | "
        "warm embeddings | peak RSS cold (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['interviews']} | {r['passages']} | {r['texts_embedded']} | {r['backend']} | {r['cold_seconds']:.1f} | "
            f"{r['cold_flow_seconds']['total']:.1f} | {r['bare_encode_seconds'] + r['bare_load_seconds']:.1f} | "
            f"{r['throughput_ratio']:.2f} | {r['flow_throughput_ratio']:.2f} | "
            + ("- | - | " if r["torch_bare_encode_seconds"] is None else
               f"{r['torch_bare_encode_seconds']:.1f} | {r['speedup_vs_torch_bare']:.2f}x | ")
            + f"{r['warm_seconds']:.1f} | {r['warm_embedded']} | "
            f"{r['cold_peak_rss_mb']:.0f} |")
    lines += ["", f"Peak RSS at {big['interviews']} interviews / at {small['interviews']}: "
              f"{big['cold_peak_rss_mb'] / small['cold_peak_rss_mb']:.3f}.", ""]
    lines += ["ONNX backends against torch fp32 (share of passages with identical applied codes / the same top code):",
              "", "| set | passages | onnx (fp32) | onnx-int8 |", "|---|---|---|---|",
              f"| sample round (transcripts_sample/) | {sample['onnx']['passages']} | "
              f"{sample['onnx']['identical_codes']:.3f} / {sample['onnx']['identical_top1']:.3f} | "
              f"{sample['onnx-int8']['identical_codes']:.3f} / {sample['onnx-int8']['identical_top1']:.3f} |"]
    if "agreement_with_torch" in small:
        a = small["agreement_with_torch"]
        lines.append(f"| {small['interviews']}-interview corpus, {small['backend']} | {a['passages']} | "
                     + (f"{a['identical_codes']:.3f} / {a['identical_top1']:.3f} | |" if small["backend"] == "onnx"
                        else f"| {a['identical_codes']:.3f} / {a['identical_top1']:.3f} |"))
    lines.append("")
    if "int8_agreement" in small:
        a = small["int8_agreement"]
        lines += [
            f"onnx-int8 against the {small['backend']} run on the {small['interviews']}-interview corpus: identical "
            f"applied codes {a['identical_codes']:.3f}, same top code {a['identical_top1']:.3f} of {a['passages']} "
            f"passages; bare encode {small['int8_speedup_bare']:.2f}x torch ({small['torch_bare_encode_seconds']:.1f} s "
            f"vs {small['int8_bare_encode_seconds']:.1f} s). `qcode run --backend onnx-int8` cold: "
            f"{small['int8_cold_seconds']:.1f} s (flow {small['int8_flow_seconds']['total']:.1f} s), peak RSS "
            f"{small['int8_peak_rss_mb']:.0f} MB.", ""]
    if "add_one_seconds" in big:
        lines += [
            f"One new interview added to the {big['interviews']}: {big['add_one_embedded']} texts embedded, "
            f"{big['add_one_reports_written']} of {big['reports']} report files rewritten; "
            f"{big['add_one_flow_seconds']['total']:.2f} s in the flow = {big['add_one_flow_ratio']:.3f} of the cold "
            f"flow; {big['add_one_seconds']:.1f} s for the whole command = {big['add_one_ratio']:.3f} of the cold command.",
            ""]
        if "dask" in big:
            dask = big["dask"]
            lines += [f"Dask (`--dask`, local cluster of {dask['workers']} worker processes x {dask['threads_per_worker']} "
                      f"thread) on the {big['interviews'] + 1} interviews: {dask['seconds']:.1f} s (flow "
                      f"{dask['flow_seconds']['total']:.1f} s) against {big['cold_seconds']:.1f} s in-process; identical "
                      f"applied codes {dask['agreement_with_in_process']['identical_codes']:.4f}, identical top code "
                      f"{dask['agreement_with_in_process']['identical_top1']:.4f} of "
                      f"{dask['agreement_with_in_process']['passages']} passages.", ""]
        else:
            lines += ["Dask: not run this time (`--no-dask`).", ""]
    lines += ["Stage seconds inside the flow:", ""]
    for r in rows:
        lines.append(f"- {r['interviews']} interviews: cold {r['cold_flow_seconds']}; warm {r['warm_flow_seconds']}"
                     + (f"; +1 {r['add_one_flow_seconds']}" if "add_one_flow_seconds" in r else ""))
    lines += ["", "Raw figures:", "", "```", json.dumps({"sample_agreement_with_torch": sample}),
              *(json.dumps(r) for r in rows), "```", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/qcode-bench"))
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-dask", dest="dask", action="store_false",
                        help="skip the Dask run on the largest corpus (with mpnet, about 20 minutes at 1,000)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sample = bench_sample(args.work)
    print(json.dumps({"sample_agreement_with_torch": sample}), flush=True)
    sizes = sorted(args.sizes)
    rows = [bench_size(args.work, size, largest=(size == sizes[-1]), smallest=(size == sizes[0]), dask=args.dask)
            for size in sizes]
    write_results(rows, sample, args.results, "python " + " ".join(sys.argv))
    print(f"results in {args.results}")


if __name__ == "__main__":
    main()
