"""Which HAProxy worker runs the live config: a small record the daemon keeps beside the server state.

A restarted daemon must know whether HAProxy already runs the config on disk, or a reload is owed.
Comparing the worker's start time (``/proc``) with the file's mtime answered that once, and was wrong
twice over: the unit's ``ProtectProc=invisible`` hides HAProxy's processes, and the background write
after a runtime change makes the file younger than a worker that runs it all the same. So the daemon
writes down what it knows when it knows it: after a confirmed reload, the master's and the new worker's
PIDs and the hash of the config they run; after a runtime change is written to disk, the same PIDs
and the new hash. At start, the record vouches for the live config when the master CLI's ``show proc``
still names the same master and current worker and the file still hashes the same.

The record is read as untrusted input (anyone with write access to the state directory could plant
one): exactly three fields, each checked by shape, or it is ignored and HAProxy is reloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from haproxy_sync import haproxy
from haproxy_sync.master import ProcInfo

log = logging.getLogger(__name__)

_PID_MAX = 1 << 22  # the kernel's pid_max ceiling (PID_MAX_LIMIT on 64-bit)
_HEX = frozenset("0123456789abcdef")
#: A worker whose ``show proc`` uptime exceeds the file's age by this much started after it was written
#: (the uptime is in whole seconds: one for the rounding, one for the clocks' reading order).
UPTIME_MARGIN = 2.0


@dataclass(frozen=True)
class Claim:
    """HAProxy's master ``master_pid`` and its current worker ``worker_pid`` run the config hashing to
    ``config_sha256``."""

    master_pid: int
    worker_pid: int
    config_sha256: str

    def vouches(self, proc: ProcInfo, text: str) -> bool:
        """Whether this claim still holds: the same processes run, and ``text`` is what they run."""
        return (proc.master_pid == self.master_pid and proc.current_worker == self.worker_pid
                and digest(text) == self.config_sha256)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


claim_path = haproxy.running_claim_path


def parse_claim(text: str) -> Claim | None:
    """The claim in ``text``, or None unless it is exactly the three fields, each of its shape."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) != {"master_pid", "worker_pid", "config_sha256"}:
        return None
    pids = data["master_pid"], data["worker_pid"]
    sha = data["config_sha256"]
    if not all(type(pid) is int and 0 < pid < _PID_MAX for pid in pids):
        return None
    if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= _HEX:
        return None
    return Claim(pids[0], pids[1], sha)


def read_claim(server_state_file: Path) -> Claim | None:
    """The claim on disk; None when there is none or it cannot be read or trusted."""
    try:
        text = haproxy.read_text(claim_path(server_state_file))
    except haproxy.HAProxyError:
        return None
    return parse_claim(text) if text is not None and len(text) < 4096 else None


def write_claim(server_state_file: Path, claim: Claim) -> None:
    """Write ``claim`` (whole old or whole new); a failure is logged: the cost is one reload at restart."""
    text = json.dumps({"master_pid": claim.master_pid, "worker_pid": claim.worker_pid,
                       "config_sha256": claim.config_sha256}) + "\n"
    try:
        haproxy.atomic_write(claim_path(server_state_file), text, mode=0o640)
    except haproxy.HAProxyError as exc:
        log.warning("%s; the next start of haproxy-sync reloads HAProxy to be sure it runs the live config", exc)


def started_after(proc: ProcInfo, file_mtime: float, now: float, start_time: float | None) -> bool:
    """Whether the current worker started after a file last modified at ``file_mtime`` was written:
    what is left when there is no claim (first start, HAProxy restarted while the daemon was down).

    ``start_time``, the worker's start from ``/proc`` to the clock tick, decides where ``/proc``
    shows it; under ``ProtectProc=invisible`` only the master CLI's uptime in whole seconds is left,
    which cannot tell a worker started within :data:`UPTIME_MARGIN` of the write (a reload, to be sure).
    """
    if start_time is not None:
        return start_time >= file_mtime
    uptime = proc.current_uptime
    return uptime is not None and uptime + UPTIME_MARGIN <= now - file_mtime
