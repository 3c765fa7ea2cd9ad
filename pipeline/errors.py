"""Domain exceptions whose messages tell a researcher what is wrong and what to do."""

from __future__ import annotations

import errno
import re
from pathlib import Path


class QcodeError(Exception):
    """Base class: the CLI turns these into a clean one-line error and exit code 1.

    ``detail`` holds what would only clutter the one line (a server's own error
    output, say); the CLI writes it to an error log and names the file.
    """

    def __init__(self, *args, detail: str | None = None):
        super().__init__(*args)
        self.detail = detail


class ConfigError(QcodeError):
    """A setting or option has a value qcode cannot use."""


class EncoderNotInstalled(ConfigError):
    """A bundled encoder's registry packages are not installed (and no assembled copy is there)."""


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


class PrefectServerError(QcodeError):
    """No Prefect API could be reached or started for a flow run."""


_DAMAGED_DATABASE = re.compile(r"not a valid DuckDB database|Could not read enough bytes|checksum|corrupt", re.I)


def is_damaged_database(exc: BaseException) -> bool:
    """Whether DuckDB's error says the database file itself is damaged (truncated, overwritten, not DuckDB)."""
    return bool(_DAMAGED_DATABASE.search(str(exc)))


def damaged_database_message(path, exc: BaseException) -> str:
    """What a damaged database means for the user and what to do; qcode never deletes or repairs the file."""
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
    where = f" {path}" if path else ""
    return (f"the database{where} is damaged or is not a qcode database ({detail}). qcode leaves it as it is: "
            "restore it from your backup, or move it aside to start a new database (its review decisions would "
            "then be missing until you restore it)")


def explain_system_error(exc: BaseException) -> str | None:
    """One line saying what went wrong and what to do, for machine failures a user can fix; None otherwise.

    Covers the ways a first command dies outside qcode's own checks: a full
    disk, a folder qcode may not write, a file standing where a folder must go.
    DuckDB reports the same failures as its own exceptions, recognised by text.

    Examples
    --------
    >>> import errno
    >>> explain_system_error(OSError(errno.ENOSPC, "No space left on device", "data/qcode.duckdb"))[:42]
    'the disk is full (writing data/qcode.duckd'
    >>> explain_system_error(KeyError("x")) is None
    True
    """
    number, text = getattr(exc, "errno", None), str(exc)
    if is_damaged_database(exc):
        return damaged_database_message(None, exc)
    filename = getattr(exc, "filename", None)
    where = f" {filename}" if filename else ""
    if number == errno.ENOSPC or "No space left on device" in text:
        return (f"the disk is full{f' (writing {filename})' if filename else ''}; free some space (df -h shows "
                "where) and run the same command again: what was stored before is kept and the work carries on "
                "where it stopped")
    if number in (errno.EACCES, errno.EPERM, errno.EROFS) or "Permission denied" in text \
            or "Read-only file system" in text:
        return (f"qcode may not write{where or ' to a folder it needs'}; choose folders you can write to with "
                "--db and --out (or QCODE_DB and QCODE_OUT), or fix the folder's permissions")
    if number in (errno.ENOTDIR, errno.EEXIST) or isinstance(exc, (NotADirectoryError, FileExistsError)):
        return (f"a file stands where qcode needs a folder{f' ({filename})' if filename else ''}; move the file "
                "away or choose other folders with --db and --out")
    return None
