"""Coding quality on every labelled set there is, for the current coder and the one it replaced.

Usage: python bench/quality.py [--model NAME] [--models DIR] [--real-dev DIR] [--heads-only] [--compare]

Prints one Markdown table: top-1 accuracy and top-3 recall (coded passages),
micro and macro F1 of the applied codes, how often a passage with no code is
left uncoded, and passages/s of encoding, for

- bench/dev_set.csv (written by the team, in transcript style);
- bench/gold_set.csv (written by the team), zero-shot on all of it, and the
  trained coder by cross-validation grouped by council;
- every CSV in ../shared/real_dev/ (real language nobody here wrote; skipped
  with a note where the folder is absent), zero-shot, and, for the cross-
  validated learning test, the current trained coder on 5 random folds of it
  (trained on four, scored on the fifth; nothing trained on it is kept).

Coders: "landed" is the zero-shot coder as first shipped (base encoder,
centroid of label + definition and examples, all weighted alike, uncoded
examples as one centroid); "current" is what ``qcode run`` uses now (encoder
tuned on the codebook, centroids of three sides: definition and include notes,
restatements, examples, weighted by DEFINITION_WEIGHT and RESTATEMENT_WEIGHT;
the nearest three uncoded examples). On the gold set the trained coder is
also scored with each fold's training gold cut to 2 and 4 passages per code.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pipeline.classify import (NO_CODE, TrainedCoder, ZeroShotCoder, codebook_training_set,  # noqa: E402
                               prototype_weights)
from pipeline.codebook import load_codebook  # noqa: E402
from pipeline.config import PROJECT_ROOT, Settings  # noqa: E402
from pipeline.embed import load_embedder  # noqa: E402
from pipeline.agreement import indicator_matrix  # noqa: E402
from pipeline.evaluate import evaluate_scores, read_labelled_csv  # noqa: E402
from pipeline.steps import coding_encoder  # noqa: E402
from pipeline.learn_steps import fold_encoder  # noqa: E402
from pipeline.train import cross_validated_predictions, gold_folds, labelled_training_set  # noqa: E402
from pipeline.tune import GoldTuningParams  # noqa: E402
from pipeline.tune import code_description  # noqa: E402

REAL_DEV = PROJECT_ROOT.parent / "shared" / "real_dev"


def landed_prototypes(codebook):
    """The first shipped coder's prototypes: label + definition and examples per code, uncoded examples."""
    texts, labels = [], []
    for code in codebook.codes:
        for text in (code_description(code), *code.examples):
            texts.append(text)
            labels.append(code.id)
    texts += list(codebook.uncoded_examples)
    labels += [NO_CODE] * len(codebook.uncoded_examples)
    return texts, labels, None, ZeroShotCoder(uncoded_neighbours=None)


def current_prototypes(codebook):
    texts, labels = codebook_training_set(codebook)
    return texts, labels, prototype_weights(codebook), ZeroShotCoder()


def thin_gold(data, folds, per_code: int, seed: int = 0):
    """The same folds with each fold's training gold cut down, in a seeded random order, to the passages needed
    until every code has ``per_code`` (a passage is kept while any of its codes has fewer)."""
    rng = np.random.default_rng(seed)
    thinned = []
    for train, held in folds:
        gold_train = train[data.is_gold[train]]
        counts = np.zeros(data.Y.shape[1])
        keep = []
        for row in rng.permutation(gold_train):
            codes = data.Y[row].astype(bool)
            if codes.any() and (counts[codes] < per_code).any():
                keep.append(row)
                counts += codes
        thinned.append((np.sort(np.r_[train[~data.is_gold[train]], keep]).astype(int), held))
    return thinned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="base sentence-transformers model [default: qcode's, all-mpnet-base-v2 unless configured]")
    parser.add_argument("--models", type=Path, default=PROJECT_ROOT / "models", help="where tuned encoders live")
    parser.add_argument("--real-dev", type=Path, default=REAL_DEV)
    parser.add_argument("--heads-only", action="store_true",
                        help="skip the trained rows that tune the encoder on gold per fold (about 15 minutes)")
    parser.add_argument("--compare", action="store_true",
                        help="also score the codebook-tuned MiniLM, the encoder the default replaced")
    args = parser.parse_args()
    settings = Settings.load(model_name=args.model, models_dir=args.models)
    codebook = load_codebook(settings.codebook_path)
    sets = {"dev_set": HERE / "dev_set.csv", "gold_set": HERE / "gold_set.csv"}
    notes = []
    if args.real_dev.is_dir():
        sets.update({f"real_dev/{p.stem}": p for p in sorted(args.real_dev.glob("*.csv"))})
    else:
        notes.append(f"real-language sets skipped: no folder {args.real_dev}")
    rows = {name: read_labelled_csv(path, codebook.ids) for name, path in sets.items()}
    # "landed" is the coder as first shipped (MiniLM, untuned); "current" codes with the chosen encoder
    # (default or --model) tuned on the codebook; with --compare, also the same recipe on MiniLM, the encoder it replaced.
    coders = {"landed": (load_embedder("minilm", settings.embed_batch_size), landed_prototypes)}
    if args.compare:
        coders["minilm tuned"] = (coding_encoder(replace(settings, model_name="minilm"), codebook), current_prototypes)
    coders["current"] = (coding_encoder(settings, codebook), current_prototypes)
    code_ids = sorted(codebook.ids)
    table = []
    for coder_name, (embedder, prototypes) in coders.items():
        texts, labels, weights, zero_shot = prototypes(codebook)
        example_vectors = embedder.encode(texts)
        zero_shot.fit(example_vectors, labels, sample_weight=weights)
        for set_name, labelled in rows.items():
            started = time.perf_counter()
            vectors = embedder.encode([r.text for r in labelled])
            rate = len(labelled) / (time.perf_counter() - started)
            truth = indicator_matrix([r.codes for r in labelled], code_ids)
            scores, uncoded = zero_shot.score_codes(vectors)
            figures = evaluate_scores(truth, scores, zero_shot.apply_thresholds(scores, uncoded), code_ids)
            table.append((set_name, f"{coder_name} zero-shot", len(labelled), figures, rate))
            if set_name == "dev_set" or coder_name != "current":
                continue
            # Trained coder, cross-validated: by council on our gold set, by random folds on real text
            # (its council and interview columns are placeholders).
            groups = [r.council for r in labelled] if set_name == "gold_set" else list(np.arange(len(labelled)) % 5)
            data = labelled_training_set(codebook, example_vectors, vectors, [r.codes for r in labelled],
                                         [str(g) for g in groups], [r.text for r in labelled])
            all_folds = gold_folds(data, 5)
            fold_sets = [("", all_folds)]
            if set_name == "gold_set":  # the learning test at the 2-4 gold passages per code a new round starts with
                fold_sets += [(f", at most {n} per code", thin_gold(data, all_folds, n)) for n in (2, 4)]
            for label, folds in fold_sets:
                per_code = np.mean([data.Y[train[data.is_gold[train]]].sum(axis=0).mean() for train, _ in folds])
                # heads only, then what `qcode train` does: the encoder tuned on each fold's training gold too
                for how, reencode in (("heads", None),
                                      ("heads + encoder", fold_encoder(embedder, codebook, data, GoldTuningParams()))):
                    if reencode and args.heads_only:
                        continue
                    started = time.perf_counter()
                    scores, applied, held = cross_validated_predictions(
                        TrainedCoder(min_positives=settings.min_gold_per_code), data, folds, reencode)
                    figures = evaluate_scores(data.Y[held], scores, applied, code_ids)
                    table.append((set_name, f"{coder_name} trained ({how}), 5-fold CV{label} ({per_code:.1f} gold/code)",
                                  len(labelled), figures, None))
                    print(f"{set_name}{label} trained ({how}): top-1 {figures['top1_accuracy']:.3f} "
                          f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    print(f"# Coding quality, codebook {codebook.version}\n")
    print("| set | coder | passages | top-1 | top-3 | micro F1 | macro F1 | no-code kept empty | passages/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for set_name, coder_name, n, f, rate in table:
        empty = "-" if f["uncoded_kept_empty"] is None else f"{f['uncoded_kept_empty']:.3f}"
        print(f"| {set_name} | {coder_name} | {n} | {f['top1_accuracy']:.3f} | {f['top3_recall']:.3f} | "
              f"{f['micro_f1']:.3f} | {f['macro_f1']:.3f} | {empty} | {'-' if rate is None else f'{rate:.0f}'} |")
    print()
    for name, (embedder, _) in coders.items():
        print(f"- {name}: encoder {embedder.model_id}")
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
