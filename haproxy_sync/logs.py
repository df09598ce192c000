"""Logging: one line per event on stderr, as key=value text or JSON, journald-native under systemd.

Every line carries an event name and the fields that matter to whoever greps or alerts on it
(:data:`FIELDS`): a call site passes them with ``extra=logs.event("apply.done", service=..., ...)``;
a line without one is named after its module (``event=consul``). The text format is
``level=info event=apply.done <one readable sentence> service=cabify path=runtime duration_ms=3``;
JSON carries the same as keys.

In the text format every line break and control character in a message or a value is escaped
(``\\n``), so no value from Consul, a file or a socket answer can start a line of its own; values
are quoted when they hold a space, a quote or ``=``. JSON escapes them by itself.

Under journald (``JOURNAL_STREAM`` names the stream stderr really is) lines carry no timestamp of
their own. Each record is sent over journald's native protocol with its fields as journal fields
(``EVENT``, ``SERVICE``, ..., ``PRIORITY``), the protocol python-systemd's ``journal.send`` speaks,
without its C library; when the journal socket cannot take it, the line goes to stderr with the
``<N>`` priority prefix that journald turns into the entry's priority.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Mapping

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
#: Every character that could end or forge a text log line (C0 and C1 controls, DEL, Unicode line and
#: paragraph separators), written as the escape Python would print for it.
_ESCAPES = {code: repr(chr(code))[1:-1] if code < 0x2000 else f"\\u{code:04x}"
            for code in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029,
                         0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]}  # and bidi controls

#: The fields a line may carry, in the order the text format writes them. A closed list: a call site
#: cannot invent a key, so the fields stay what dashboards and journal queries expect.
FIELDS = ("service", "backend", "instance", "slot", "path", "reason", "kind", "stage", "commands",
          "worker", "duration_ms", "delay_s", "setting", "file", "address", "error")
#: Where journald listens for native-protocol datagrams (sd_journal_sendv's socket).
JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "haproxy-sync"

FieldValue = str | int | float | bool | None


def one_line(text: str) -> str:
    """``text`` with every line break and control character escaped: a value from Consul, a file or
    HAProxy can never start a log line of its own."""
    return text.translate(_ESCAPES)


def event(name: str, **fields: FieldValue) -> dict[str, object]:
    """The ``extra=`` of a log call: its event name and fields (None values are left out).

    Raises ``TypeError`` for a key outside :data:`FIELDS` (a bug at the call site, caught by tests).
    """
    unknown = fields.keys() - set(FIELDS)
    if unknown:
        raise TypeError(f"log fields {sorted(unknown)} are not in logs.FIELDS")
    return {"event": name, "fields": {k: v for k, v in fields.items() if v is not None}}


def event_of(record: logging.LogRecord) -> str:
    named = getattr(record, "event", None)
    return named if isinstance(named, str) else record.name.rsplit(".", 1)[-1]


def fields_of(record: logging.LogRecord) -> dict[str, FieldValue]:
    fields = getattr(record, "fields", None)
    if not isinstance(fields, Mapping):
        return {}
    return {key: fields[key] for key in FIELDS if key in fields}


def _text_value(value: FieldValue) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if text == "" or any(c in text for c in ' "=\\'):
        text = json.dumps(text, ensure_ascii=False)
    return one_line(text)


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str, journald: bool) -> None:
        super().__init__()
        self.fmt = fmt
        self.journald = journald

    def message(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message} | {self.formatException(record.exc_info)!r}"
        return message

    def format(self, record: logging.LogRecord) -> str:
        message, name, fields = self.message(record), event_of(record), fields_of(record)
        level = record.levelname.lower()
        if self.fmt == "json":
            payload: dict[str, object] = {"level": level, "event": name, "logger": record.name, "msg": message,
                                          **fields}
            if not self.journald:
                payload = {"ts": self._timestamp(record), **payload}
            line = json.dumps(payload, ensure_ascii=False)
        else:
            pairs = "".join(f" {key}={_text_value(value)}" for key, value in fields.items())
            line = f"level={level} event={one_line(name)} {one_line(message)}{pairs}"
            if not self.journald:
                line = f"{self._timestamp(record)} {line}"
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line

    @staticmethod
    def _timestamp(record: logging.LogRecord) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def journal_fields(record: logging.LogRecord, message: str) -> list[tuple[str, str]]:
    """The journal entry of ``record``: MESSAGE, PRIORITY, the identifier, EVENT and the fields,
    upper-cased (journald's field names are ``[A-Z0-9_]``)."""
    entry = [("MESSAGE", message), ("PRIORITY", str(_PRIORITY.get(record.levelno, 6))),
             ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER), ("EVENT", event_of(record)), ("LOGGER", record.name)]
    for key, value in fields_of(record).items():
        entry.append((key.upper(), value if isinstance(value, str) else json.dumps(value)))
    return entry


def journal_datagram(entry: list[tuple[str, str]]) -> bytes:
    """journald's native protocol: ``KEY=value`` lines; a value holding a newline is sent as
    ``KEY\\n``, its length as 64-bit little-endian, the bytes, ``\\n``."""
    parts = []
    for key, value in entry:
        data = value.encode("utf-8", "backslashreplace")
        if b"\n" in data:
            parts.append(key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(key.encode() + b"=" + data + b"\n")
    return b"".join(parts)


class _JournalHandler(logging.Handler):
    """Sends each record to journald natively; falls back to the stderr line when it cannot."""

    def __init__(self, address: str, fallback: logging.Handler, formatter: _Formatter) -> None:
        super().__init__()
        self.address = address
        self.fallback = fallback
        self.formatter_ = formatter
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            datagram = journal_datagram(journal_fields(record, self.formatter_.message(record)))
            self.sock.sendto(datagram, self.address)
        except OSError:
            self.fallback.handle(record)  # no journal socket, or a record too big for one datagram
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


def stderr_is_journal() -> bool:
    """Whether stderr is the journal stream systemd connected (``JOURNAL_STREAM`` is ``dev:inode`` of
    it; a redirected stderr, e.g. a shell run from the unit's environment, is not)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def _not_watchdogs_stop_race(record: logging.LogRecord) -> bool:
    """watchdog's inotify thread logs an error when an event arrives while the observer stops (its own
    race, harmless: nothing is watched any more); at every stop that would be an error line in the
    journal that means nothing."""
    return "called when the thread is inactive" not in str(record.msg)


def configure(level: str = "info", fmt: str = "text") -> None:
    """(Re)configure the root handler; safe to call again after SIGHUP changes the settings."""
    journald = stderr_is_journal()
    formatter = _Formatter(fmt, journald=journald)
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    journal = os.environ.get("HAPROXY_SYNC_JOURNAL_SOCKET", JOURNAL_SOCKET)
    if journald and os.path.exists(journal):
        handler = _JournalHandler(journal, handler, formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, _JournalHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # watchdog logs every inotify event at debug, the daemon's own writes of haproxy.cfg included.
    for noisy in ("aiohttp.access", "asyncio", "urllib3", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    inotify = logging.getLogger("watchdog.observers.inotify")
    if _not_watchdogs_stop_race not in inotify.filters:
        inotify.addFilter(_not_watchdogs_stop_race)


def _formatter() -> _Formatter | None:
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter_ if isinstance(handler, _JournalHandler) else handler.formatter
        if isinstance(formatter, _Formatter):
            return formatter
    return None


def fatal(message: str, name: str = "fatal", **fields: FieldValue) -> None:
    """A command's last word (a config it cannot load, a start that fails): one line, never a traceback.

    Through the formatter when a machine reads it (JSON, or journald: priority 3, so ``journalctl -p
    err`` shows why the service died, with its event and fields); as ``haproxy-sync: <message>`` on
    a terminal's text stderr. Logging is set up with the defaults first when nothing configured it yet.
    """
    formatter = _formatter()
    if formatter is None:
        configure("info", "text")
        formatter = _formatter()
    if formatter is not None and (formatter.fmt == "json" or formatter.journald):
        logging.getLogger("haproxy_sync").error("%s", message, extra=event(name, **fields))
    else:
        sys.stderr.write(f"haproxy-sync: {one_line(message)}\n")
        sys.stderr.flush()
