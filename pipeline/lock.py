"""One writer at a time: a lock file beside the database, held for a whole run or command.

DuckDB itself lets only one process open a database for writing; qcode's
steps open and close it in turn, so without this lock two runs could
interleave their steps. The second run waits for the first, up to a limit,
then stops with a message saying who holds the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from pipeline.errors import StoreError


def lock_path(db_path: Path) -> Path:
    return Path(f"{db_path}.lock")


@contextmanager
def writer_lock(db_path: Path | str, *, wait_seconds: float = 0.0, purpose: str = "qcode") -> Iterator[None]:
    """Hold the database's writer lock; wait up to ``wait_seconds`` for another holder to finish.

    The lock is an advisory ``flock`` on ``<database>.lock``: the operating
    system releases it when the holder exits, even after SIGKILL, so a killed
    run never leaves a stale lock behind.
    """
    path = lock_path(Path(db_path))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"another qcode command is using {db_path} ({_holder(handle)}); waited {wait_seconds:.0f} s. "
                        "Try again when it has finished, or raise the wait with --wait SECONDS") from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "purpose": purpose,
                                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock


def _holder(handle) -> str:
    handle.seek(0)
    try:
        info = json.loads(handle.read())
        return f"pid {info['pid']}, {info['purpose']}, since {info['since']}"
    except (ValueError, KeyError):
        return "holder unknown"
