"""Build synthetic interview rounds of any size from the sample round's own material.

Usage: python bench/make_corpus.py OUT_DIR --interviews 1000 [--seed 0] [--start 0]

Each interview is new text: its respondent passages are sentences drawn
(seeded) from every respondent turn of transcripts_sample/, so the embedding
cache cannot shortcut the work the way copies of the same files would.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from pipeline.config import PROJECT_ROOT, Settings
from pipeline.ingest import read_round, split_turns
from pipeline.schemas import RESPONDENT
from pipeline.segment import sentence_spans

COUNCIL_TYPES = ("county", "metropolitan", "district")
ROLES = ("chief executive", "politician", "senior manager", "middle manager", "frontline employee")


def sentence_pools(sample: Path = PROJECT_ROOT / "transcripts_sample") -> tuple[list[str], list[str]]:
    settings = Settings()
    transcripts, _ = read_round(sample)
    answers, questions = [], []
    for t in transcripts:
        for turn in split_turns(t.text, settings.interviewer_labels, settings.respondent_labels, source=t.source):
            if turn.role == RESPONDENT:
                answers += [turn.text[s:e] for s, e in sentence_spans(turn.text)]
            else:
                questions.append(" ".join(turn.text.split()))
    return answers, questions


def write_interviews(out_dir: Path, count: int, *, start: int = 0, seed: int = 0) -> list[Path]:
    answers, questions = sentence_pools()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for number in range(start, start + count):
        rng = random.Random(seed * 1_000_003 + number)
        council = number // 3
        lines = [
            "---", f"council: Bench Council {council:04d}", f"council_type: {COUNCIL_TYPES[council % 3]}",
            f"interview_id: B{number:05d}", f"respondent_role: {ROLES[number % len(ROLES)]}", "round: bench", "---",
        ]
        for _ in range(16):
            lines.append(f"Interviewer: {rng.choice(questions)}")
            lines.append("Respondent: " + " ".join(rng.choice(answers) for _ in range(rng.randint(4, 9))))
        path = out_dir / f"B{number:05d}.md"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--interviews", type=int, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    written = write_interviews(args.out_dir, args.interviews, start=args.start, seed=args.seed)
    print(f"wrote {len(written)} interviews to {args.out_dir}")


if __name__ == "__main__":
    main()
