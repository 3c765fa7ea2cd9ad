"""Where the flows' Prefect API comes from: the user's own server, or a temporary local one started here.

Prefect starts a temporary local server on a flow's first API call and waits
20 s for it by default. The first start after an install (cold imports, byte
compiling, the server migrating its own database) takes longer than that on a
2-core machine, so qcode starts the server itself, before the flow, with a
longer wait that a user's own Prefect setting still overrides, and turns a
server that cannot be reached into one line that says what to do.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from pipeline.errors import PrefectServerError

TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_TIMEOUT = 180
"""Seconds qcode waits for Prefect's local server when the user has not set TIMEOUT_SETTING.

Measured here: about 10 s warm, and up to a minute for the first start after an install.
"""

WAITING_MESSAGE = "starting Prefect's local server; the first start after installing takes up to a minute"


def startup_timeout() -> tuple[int, bool]:
    """(seconds to wait for the local server, whether that is the user's own setting).

    A value set anywhere Prefect reads settings from (environment, profile,
    prefect.toml, .env) counts as the user's and wins over qcode's default.
    """
    from prefect.settings import get_current_settings

    ephemeral = get_current_settings().server.ephemeral
    if "startup_timeout_seconds" in ephemeral.model_fields_set:
        return ephemeral.startup_timeout_seconds, True
    return DEFAULT_STARTUP_TIMEOUT, False


def connect(say: Callable[[str], None]) -> str:
    """Make sure a Prefect API answers before a flow runs; returns its URL.

    With ``PREFECT_API_URL`` set, that server is used and none is started;
    otherwise Prefect's temporary local server is started now (``say`` tells
    the user what is being waited for). Raises :class:`PrefectServerError`
    with the remedy when no server can be reached or started.
    """
    from prefect.settings import PREFECT_API_URL, get_current_settings

    api_url = PREFECT_API_URL.value()
    if api_url:
        _check_health(api_url)
        return api_url
    if not get_current_settings().server.ephemeral.enabled:
        raise PrefectServerError(
            "PREFECT_API_URL is not set and Prefect's temporary local server is switched off "
            "(PREFECT_SERVER_EPHEMERAL_ENABLED=false); set PREFECT_API_URL to a running Prefect server "
            "(e.g. http://127.0.0.1:4200/api after 'prefect server start') or enable the local server")
    return _start_local_server(say)


def _start_local_server(say: Callable[[str], None]) -> str:
    from prefect.server.api.server import SubprocessASGIServer

    timeout, users_own = startup_timeout()
    say(WAITING_MESSAGE)
    server = SubprocessASGIServer()  # the instance Prefect's client reuses for the flow run
    started = time.monotonic()
    try:
        server.start(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - Prefect raises RuntimeError, httpx errors or OSError here
        server.stop()
        whose = "your setting" if users_own else "qcode's default"
        raise PrefectServerError(
            f"Prefect's local server did not answer within {timeout} s ({whose}). Run the same command again "
            f"(a second start is faster), raise the wait with {TIMEOUT_SETTING}=300, or point PREFECT_API_URL at a "
            "running Prefect server ('prefect server start')",
            detail=f"{type(exc).__name__}: {exc}") from None
    say(f"Prefect's local server is up ({time.monotonic() - started:.0f} s)")
    return server.api_url


def _check_health(api_url: str) -> None:
    import httpx

    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=15)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise PrefectServerError(
            f"PREFECT_API_URL is {api_url} but no Prefect server answers there ({type(exc).__name__}). Start it "
            "('prefect server start'), correct PREFECT_API_URL, or unset it to let qcode start a temporary local "
            "server", detail=f"{type(exc).__name__}: {exc}") from None


class _PrefectLogFile(logging.FileHandler):
    """Where qcode sends Prefect's console messages; a marker type so a later command can swap it."""


def send_logs_to(path: Path) -> None:
    """Prefect's console messages (a failed task's traceback among them) go to ``path``, not the terminal.

    The terminal keeps qcode's own progress and one-line summary or error; the
    error line names the log file. If ``path`` cannot be written the messages
    are dropped: they are also in the Prefect server's own log of the run.
    """
    import prefect.main  # noqa: F401 - sets up Prefect's logging, which is then redirected
    from prefect.logging.handlers import PrefectConsoleHandler

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file: logging.Handler = _PrefectLogFile(path, encoding="utf-8")
    except OSError:
        to_file = logging.NullHandler()
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(), *(logger for logger in logging.root.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, (PrefectConsoleHandler, _PrefectLogFile)):
                logger.removeHandler(handler)
                if isinstance(handler, _PrefectLogFile):
                    handler.close()
                logger.addHandler(to_file)
