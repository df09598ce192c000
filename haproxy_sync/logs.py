"""Logging: one line per event on stderr, as key=value text or JSON, journald-aware.

In the text format every line break and control character in a message is escaped (``\\n``), so no
value from Consul, a file or a socket answer can start a line of its own; values from Consul are
logged quoted (``%r``) where they are not already checked names. JSON escapes them by itself.

Under journald (``JOURNAL_STREAM`` set) lines carry no timestamp of their own and start with the
``<N>`` priority prefix that journald turns into the entry's priority.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
#: Every character that could end or forge a text log line (C0 and C1 controls, DEL, Unicode line and
#: paragraph separators), written as the escape Python would print for it.
_ESCAPES = {code: repr(chr(code))[1:-1] if code < 0x2000 else f"\\u{code:04x}"
            for code in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029,
                         0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]}  # and bidi controls


def one_line(text: str) -> str:
    """``text`` with every line break and control character escaped: a value from Consul, a file or
    HAProxy can never start a log line of its own."""
    return text.translate(_ESCAPES)


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str, journald: bool) -> None:
        super().__init__()
        self.fmt = fmt
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message} | {self.formatException(record.exc_info)!r}"
        level = record.levelname.lower()
        if self.fmt == "json":
            payload = {"level": level, "logger": record.name, "msg": message}
            if not self.journald:
                payload = {"ts": self._timestamp(record), **payload}
            line = json.dumps(payload, ensure_ascii=False)
        else:
            message = one_line(message)
            line = f"level={level} {message}" if self.journald else f"{self._timestamp(record)} level={level} {message}"
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line

    @staticmethod
    def _timestamp(record: logging.LogRecord) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def configure(level: str = "info", fmt: str = "text") -> None:
    """(Re)configure the root handler; safe to call again after SIGHUP changes the settings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt, journald=bool(os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # watchdog logs every inotify event at debug, the daemon's own writes of haproxy.cfg included.
    for noisy in ("aiohttp.access", "asyncio", "urllib3", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
