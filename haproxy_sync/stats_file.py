"""HAProxy 3.0's ``stats-file``: the counters a reload would reset, carried to the next worker.

Before a reload the running worker's counters are dumped (``dump stats-file``) where the next one's
``stats-file`` directive reads them; after it, the file is cleared, so a later cold start does not
load counters of the past. The dump is HAProxy's answer, read like any other untrusted text: only
lines of its three kinds may get into a file HAProxy loads at startup.
"""

from __future__ import annotations

import re
from pathlib import Path

from haproxy_sync import commands, haproxy

#: A line of ``dump stats-file``: a header (``#fe guid,stot,...``), an object's guid and its counters, or blank.
_STATS_HEADER = re.compile(r"#[a-z]{2,8} guid(?:,[a-z0-9_]{1,40}){1,200},?", re.ASCII)
_STATS_VALUES = re.compile(r"[A-Za-z0-9_.:-]{1,127}(?:,-?[0-9]{0,20}){1,200},?", re.ASCII)
#: What a stats-file holds between reloads: nothing (one newline is what HAProxy 3.0 loads silently).
EMPTY_STATS_FILE = "\n"


def stats_dump_problem(text: str) -> str | None:
    """Why ``dump stats-file``'s answer is not a file HAProxy should load, or None when every line is
    one of its three kinds. HAProxy reads this file at startup: nothing else may get into it."""
    if not text.strip():
        return "the answer is empty"
    for line in text.split("\n"):
        if line and not (_STATS_HEADER.fullmatch(line) or _STATS_VALUES.fullmatch(line)):
            return f"cannot read line {line[:120]!r}"
    return None


def save_stats_file(stats_socket: Path, path: Path) -> bool:
    """Before a reload on 3.0: HAProxy's counters where its next worker's ``stats-file`` reads them.

    Returns False (and leaves the file as it was) when the socket does not answer or the answer does
    not read: the reload goes on, its counters start from zero as on 2.6.
    """
    try:
        text = haproxy.socket_command(stats_socket, commands.DUMP_STATS_FILE, timeout=10.0)
    except haproxy.SocketError:
        return False
    if stats_dump_problem(text) is not None:
        return False
    haproxy.atomic_write(path, text, mode=0o644, setting="haproxy.stats_file")
    return True


def clear_stats_file(path: Path) -> None:
    """After the reload: an empty stats-file, so a later cold start does not load counters of the past
    (a counter that goes back reads as a reset and a burst to ``rate()``)."""
    if haproxy.read_text(path) != EMPTY_STATS_FILE:
        path.parent.mkdir(parents=True, exist_ok=True)
        haproxy.atomic_write(path, EMPTY_STATS_FILE, mode=0o644, setting="haproxy.stats_file")
