"""Child processes of a benchmark, and the bounded waits around them.

Every process is started in its own session (Ctrl-C in the terminal reaches only the orchestrator,
which then stops them in order), writes its output to a log file in the run's directory, and is
stopped within a bounded time (SIGKILL to its whole group when it lingers). Every wait goes through
:func:`wait_for`, so that no loop can spin forever. Everything listens on and talks to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

from . import REPO
from .ports import HOST

T = TypeVar("T")


class StackError(Exception):
    """A part of the stack did not start, answer or behave; the message says which and where its log is."""


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; raise :class:`StackError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    """A signal handler that raises KeyboardInterrupt, so that every ``finally`` stops what it started."""
    raise KeyboardInterrupt


def interrupt_on(*signals: int) -> None:
    """Turn each of ``signals`` into a KeyboardInterrupt (SIGINT too: a shell starts background jobs with
    SIGINT ignored)."""
    for sig in signals:
        signal.signal(sig, interrupt)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus every ``CONSUL_*`` name, so a developer's own Consul is never reached."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update(extra)
    return env


def port_answers(port: int, host: str = HOST) -> bool:
    """Whether something accepts a TCP connection on ``host:port`` right now."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def http_get(url: str, timeout: float = 2.0, host_header: str = "") -> tuple[int, str]:
    """GET ``url``; (0, reason) when nothing answers, so callers can poll without try/except."""
    request = urllib.request.Request(url, headers={"Host": host_header} if host_header else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError) as exc:
        return 0, str(exc)


class Proc:
    """A child process in its own session, its output in a log file; ``stop`` is bounded and idempotent.

    ``stdout_pipe``: stdout is a pipe the caller reads (stderr still goes to the log).
    """

    def __init__(self, name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = REPO, stdout_pipe: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log, env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """``sig``, then SIGKILL to the process group after ``timeout``; returns the exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 8) -> list[str]:
        return log_lines(self.log_path)[-lines:]


def log_lines(path: Path) -> list[str]:
    """The lines of a log file; none when it is not there (yet)."""
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def stop_all(parts: Iterable[Any]) -> None:
    """Stop what was started, last first; one failing stop does not keep the others running."""
    for part in reversed(list(parts)):
        with contextlib.suppress(Exception):
            part.stop()
