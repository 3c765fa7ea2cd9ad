"""Zero-shot coding quality on the labelled development set.

Usage: python bench/zero_shot_quality.py [--dev bench/dev_set.csv] [--model NAME]

Prints top-1 accuracy and top-3 recall (on coded passages), micro and macro F1
of the applied codes, and a per-code table, as Markdown.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.classify import ZeroShotCoder, codebook_training_set
from pipeline.codebook import load_codebook
from pipeline.config import Settings
from pipeline.embed import load_embedder
from pipeline.evaluate import evaluate_scores, indicator_matrix, read_labelled_csv

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=HERE / "dev_set.csv")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    settings = Settings.load(model_name=args.model)
    codebook = load_codebook(settings.codebook_path)
    embedder = load_embedder(settings.model_name)
    dev = read_labelled_csv(args.dev, codebook.ids)
    started = time.perf_counter()
    texts, labels = codebook_training_set(codebook)
    coder = ZeroShotCoder().fit(embedder.encode(texts), labels)
    scores, uncoded = coder.score_codes(embedder.encode([d.text for d in dev]))
    applied = coder.apply_thresholds(scores, uncoded)
    code_ids = list(coder.classes_)
    result = evaluate_scores(indicator_matrix([d.codes for d in dev], code_ids), scores, applied, code_ids)
    print(f"# Zero-shot coder on {args.dev.name}: {result['passages']} passages, {result['coded_passages']} coded")
    print(f"model {embedder.model_id}, codebook {codebook.version}, {time.perf_counter() - started:.1f} s\n")
    print("| measure | value |\n|---|---|")
    for key in ("top1_accuracy", "top3_recall", "micro_f1", "macro_f1", "uncoded_kept_empty"):
        print(f"| {key} | {result[key]:.3f} |")
    print("\n| code | support | precision | recall | F1 |\n|---|---|---|---|---|")
    for code, row in result["per_code"].items():
        print(f"| {code} | {row['support']} | {row['precision']:.2f} | {row['recall']:.2f} | {row['f1']:.2f} |")


if __name__ == "__main__":
    main()
