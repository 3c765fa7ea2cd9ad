"""Domain exceptions whose messages tell a researcher what is wrong and what to do."""

from __future__ import annotations

from pathlib import Path


class QcodeError(Exception):
    """Base class: the CLI turns these into a clean one-line error and exit code 1."""


class ConfigError(QcodeError):
    """A setting or option has a value qcode cannot use."""


class CodebookError(QcodeError):
    """The codebook YAML is malformed; the message names the code and field."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = Path(path)
        self.problems = list(problems)
        listing = "\n  - ".join(self.problems)
        super().__init__(f"codebook {self.path} is invalid:\n  - {listing}")


class TranscriptError(QcodeError):
    """One transcript file cannot be used; it is quarantined and the round goes on."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path.name}: {reason}")


class ReviewFileError(QcodeError):
    """A reviewer's CSV cannot be applied; it is rejected whole, nothing from it is stored."""

    def __init__(self, name: str, problems: list[str]):
        self.name = name
        self.problems = list(problems)
        listing = "\n  - ".join(self.problems)
        super().__init__(f"{name} was rejected and nothing from it was applied; fix these and import it again:\n  - {listing}")


class RoundError(QcodeError):
    """The round folder itself cannot be processed (missing folder, broken manifest)."""


class StoreError(QcodeError):
    """The database cannot be opened or written."""
