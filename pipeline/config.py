"""Settings: the one place where paths, model names and thresholds resolve.

Every default can be overridden by a keyword argument (the CLI passes its
options) or by an environment variable, so a nightly job and a researcher's
shell can point qcode at other folders or another embedding model without code.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from pipeline.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_MODEL = "default"
"""Stands for the bundled encoder named by BUNDLED_DEFAULT (see pipeline/bundled.py)."""

BUNDLED_DEFAULT = "mpnet"
"""all-mpnet-base-v2: on real report prose nobody here wrote, tuned on the codebook it codes top-1 0.72 / top-3 0.91
against MiniLM's 0.63 / 0.79 (bench/quality.py), at about a fifth of MiniLM's speed. ``--model minilm`` keeps the
small one."""

BUNDLED_FALLBACK = "minilm"
"""What ``default`` codes with, after a warning, when the default's packages were not installed."""

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
    "tune_encoder": "QCODE_TUNE_ENCODER",
    "tune_encoder_on_gold": "QCODE_TUNE_ENCODER_ON_GOLD",
    "encoders_dir": "QCODE_ENCODERS",
    "backend": "QCODE_BACKEND",
}

BACKENDS = ("auto", "onnx", "onnx-int8", "torch")


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
    tune_encoder: bool = True
    """Code with the base model fine-tuned on the codebook (built once per codebook version, see pipeline/tune.py)."""
    tune_encoder_on_gold: bool = True
    """``qcode train`` tunes the encoder on reviewers' gold as well as the heads (see pipeline/tune.py)."""
    encoders_dir: Path | None = None
    """Where tuned encoders are kept [default: models_dir/encoders]."""
    backend: str = "auto"
    """How coding vectors are computed: ``auto`` uses the fastest of an encoder's ONNX Runtime copies (int8, then
    fp32) that agrees with torch, ``onnx-int8`` and ``onnx`` (fp32) always use that copy, ``torch`` never uses one
    (see pipeline/onnx_backend.py)."""

    @property
    def tuned_encoders_dir(self) -> Path:
        return self.encoders_dir if self.encoders_dir is not None else self.models_dir / "encoders"

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
        for name in ("db_path", "out_dir", "codebook_path", "models_dir", "encoders_dir"):
            if name in values:
                values[name] = Path(values[name])
        for name in ("tune_encoder", "tune_encoder_on_gold"):
            if isinstance(values.get(name), str):
                flag = values[name].strip().lower()
                if flag not in ("1", "0", "true", "false", "yes", "no"):
                    raise ConfigError(f"{_ENVIRONMENT[name]} must be true or false, not {values[name]!r}")
                values[name] = flag in ("1", "true", "yes")
        settings = replace(cls(), **values)
        settings.validate()
        return settings

    def prepare_folders(self) -> None:
        """Create the database and reports folders, so a folder qcode may not write stops a run before any work.

        Raises the operating system's own error (PermissionError, NotADirectoryError) naming the folder.
        """
        for folder in (self.db_path.parent, self.out_dir):
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "Permission denied", str(folder))

    def validate(self) -> None:
        if self.anonymisation_policy not in ANONYMISATION_POLICIES:
            raise ConfigError(
                f"anonymisation policy {self.anonymisation_policy!r} is not one of "
                f"{', '.join(ANONYMISATION_POLICIES)}"
            )
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
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


@dataclass(frozen=True)
class NightlyConfig:
    """What the scheduled rerun does: from ``qcode.toml``, paths relative to that file."""

    settings: Settings
    rounds: tuple[Path, ...]
    inbox: Path
    schedule: str = "0 2 * * *"
    timezone: str | None = None
    retrain: bool = True
    dask_address: str | None = None
    lock_wait_seconds: float = 3600.0


_CONFIG_KEYS = {
    "qcode": {"database": str, "reports": str, "models": str, "model": str, "codebook": str, "anonymisation": str,
              "tune_encoder": bool, "tune_encoder_on_gold": bool, "backend": str},
    "nightly": {"rounds": list, "inbox": str, "schedule": str, "timezone": str, "retrain": bool,
                "lock_wait_seconds": (int, float)},
    "dask": {"address": str},
}


def load_config(path: Path | str) -> NightlyConfig:
    """Read and validate ``qcode.toml``; every problem is reported at once, naming the key.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "round1").mkdir()
    >>> _ = (folder / "qcode.toml").write_text('[nightly]\\nrounds = ["round1"]\\nschedule = "30 1 * * *"\\n')
    >>> config = load_config(folder / "qcode.toml")
    >>> config.schedule, config.rounds[0].name, config.inbox.name
    ('30 1 * * *', 'round1', 'inbox')
    """
    import tomllib

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no configuration file at {path}; create one (see README, 'Nightly reruns')") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    problems = []
    for section, values in raw.items():
        if section not in _CONFIG_KEYS or not isinstance(values, dict):
            problems.append(f"unknown section [{section}]; allowed: {', '.join(_CONFIG_KEYS)}")
            continue
        for key, value in values.items():
            expected = _CONFIG_KEYS[section].get(key)
            if expected is None:
                problems.append(f"[{section}] unknown key '{key}'; allowed: {', '.join(_CONFIG_KEYS[section])}")
            elif not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
                problems.append(f"[{section}] {key} has the wrong type ({type(value).__name__})")
    base = path.parent

    def well_typed(section: str) -> dict:
        values = raw.get(section, {})
        types = _CONFIG_KEYS[section]
        return {k: v for k, v in values.items() if k in types and isinstance(v, types[k])
                and not (types[k] is not bool and isinstance(v, bool))} if isinstance(values, dict) else {}

    qcode, nightly, dask = well_typed("qcode"), well_typed("nightly"), well_typed("dask")
    rounds = nightly.get("rounds", [])
    if not rounds or not all(isinstance(r, str) for r in rounds):
        problems.append("[nightly] rounds must list at least one round folder, e.g. rounds = [\"interviews/2026-spring\"]")
        rounds = []
    missing = [r for r in rounds if not (base / r).is_dir()]
    problems += [f"[nightly] rounds: {r} is not a folder (relative paths start at {base})" for r in missing]
    schedule = nightly.get("schedule", "0 2 * * *")
    if not _valid_cron(schedule):
        problems.append(f"[nightly] schedule {schedule!r} is not a cron expression like \"0 2 * * *\" (02:00 every day)")
    zone = nightly.get("timezone")
    if zone is not None:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problems.append(f"[nightly] timezone {zone!r} is not a time zone name like \"Europe/London\"")
    settings = None
    try:
        settings = Settings.load(
            db_path=base / qcode.get("database", "data/qcode.duckdb"),
            out_dir=base / qcode.get("reports", "reports"),
            models_dir=base / qcode.get("models", "models"),
            codebook_path=base / qcode["codebook"] if "codebook" in qcode else None,
            model_name=qcode.get("model"), anonymisation_policy=qcode.get("anonymisation"),
            tune_encoder=qcode.get("tune_encoder"), tune_encoder_on_gold=qcode.get("tune_encoder_on_gold"),
            backend=qcode.get("backend"))
    except ConfigError as exc:
        problems.append(f"[qcode] {exc}")
    if problems:
        raise ConfigError(f"{path} has problems:\n  - " + "\n  - ".join(problems))
    return NightlyConfig(
        settings=settings, rounds=tuple(base / r for r in rounds), inbox=base / nightly.get("inbox", "inbox"),
        schedule=schedule, timezone=zone, retrain=nightly.get("retrain", True),
        dask_address=dask.get("address") or None, lock_wait_seconds=float(nightly.get("lock_wait_seconds", 3600)))


def _valid_cron(expression: str) -> bool:
    from datetime import datetime

    try:
        from cronsim import CronSim, CronSimError
    except ImportError:  # cronsim comes with Prefect; without it, check the shape only
        return isinstance(expression, str) and len(expression.split()) == 5
    try:
        CronSim(expression, datetime.now())
    except CronSimError:
        return False
    return True
