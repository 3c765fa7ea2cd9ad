"""Measure a coder on a labelled set of passages (a CSV of text and codes)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.agreement import multilabel_f1, top_k_accuracy, top_k_recall
from pipeline.errors import QcodeError


@dataclass(frozen=True)
class LabelledPassage:
    text: str
    codes: tuple[str, ...]
    council: str = ""
    interview: str = ""


def read_labelled_csv(path: Path, valid_codes) -> list[LabelledPassage]:
    """Rows with ``text`` and ``codes`` (ids separated by ``;``, ``,`` or spaces; empty for none)."""
    text = Path(path).read_bytes().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"text", "codes"} <= set(reader.fieldnames):
        raise QcodeError(f"{path}: needs the columns 'text' and 'codes'")
    valid = set(valid_codes)
    rows = []
    for line, row in enumerate(reader, start=2):
        codes = tuple(c.upper() for c in re.split(r"[;,\s]+", row["codes"] or "") if c)
        unknown = [c for c in codes if c not in valid]
        if unknown:
            raise QcodeError(f"{path}, line {line}: unknown code id(s) {', '.join(unknown)}")
        rows.append(LabelledPassage(row["text"], codes, row.get("council", ""), row.get("interview", "")))
    return rows


def evaluate_scores(truth: np.ndarray, scores: np.ndarray, applied: np.ndarray, code_ids) -> dict:
    """The headline figures: top-1 accuracy and top-3 recall on coded passages, micro and macro F1."""
    f1 = multilabel_f1(truth, applied, code_ids)
    return {
        "passages": int(len(truth)),
        "coded_passages": int(truth.any(axis=1).sum()),
        "top1_accuracy": top_k_accuracy(truth, scores, 1),
        "top3_recall": top_k_recall(truth, scores, 3),
        "micro_f1": f1.micro_f1,
        "macro_f1": f1.macro_f1,
        "uncoded_kept_empty": float((~applied.any(axis=1))[~truth.any(axis=1)].mean()) if (~truth.any(axis=1)).any() else None,
        "per_code": f1.per_code,
    }
