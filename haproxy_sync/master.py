"""HAProxy's master process: what ``show proc`` says, and reloads judged by it.

A reload is a question put to the master, and only the master answers it. The clock alone cannot:
a master that parses a big map or many certificates may take longer than ``reload_timeout`` to
start its new worker, and calling that a failure (then reloading again, which restarts the load)
is how a slow start becomes a reload storm. So past ``reload_timeout`` the master is asked what it
is doing (:func:`judge_reload`): while it is demonstrably loading (alive, its CLI closed while it
re-executes, or open with no new worker yet) the wait goes on, up to ``reload_max_wait``; a failure
is called only when the master says so (its failed-reload counter moved, ``Success=0``) or is gone.

Everything here blocks; the daemon calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from haproxy_sync import commands
from haproxy_sync.haproxy import HAProxyError, SocketError, socket_command
from haproxy_sync.reasons import ReloadFailure

log = logging.getLogger(__name__)

#: How long one ``show proc`` may take while a reload is watched; the master answers at once or refuses.
PROBE_TIMEOUT = 1.0


class ReloadError(HAProxyError):
    """HAProxy did not confirm a new worker running the new config; ``failure`` says why."""

    def __init__(self, message: str, failure: ReloadFailure = ReloadFailure.REJECTED) -> None:
        super().__init__(message)
        self.failure = failure

    @property
    def outcome_known(self) -> bool:
        """False when HAProxy may still start the new config: the file on disk must then stay."""
        return self.failure is not ReloadFailure.STILL_LOADING


@dataclass(frozen=True)
class ProcInfo:
    """The master's ``show proc``: how often it reloaded, how many reloads failed, which workers run."""

    master_pid: int
    reloads: int
    failed: int
    workers: tuple[tuple[int, int], ...]  # (pid, reloads seen by that worker: 0 is the newest)
    current_uptime: float | None = None  # seconds the newest worker has run, in whole seconds

    @property
    def current_worker(self) -> int | None:
        return next((pid for pid, generation in self.workers if generation == 0), None)


_MASTER_LINE = re.compile(r"^(\d+)\s+master\s+(\d+)(?:\s+\[failed:\s*(\d+)\])?")
_WORKER_LINE = re.compile(r"^(\d+)\s+worker\s+(\d+)(?:\s+(\d+)d(\d+)h(\d+)m(\d+)s\b)?")


def parse_show_proc(text: str) -> ProcInfo:
    master = None
    workers: list[tuple[int, int]] = []
    uptime = None
    for line in text.splitlines():
        if match := _MASTER_LINE.match(line):
            master = match
        elif match := _WORKER_LINE.match(line):
            workers.append((int(match.group(1)), int(match.group(2))))
            if int(match.group(2)) == 0 and match.group(3) is not None:
                days, hours, minutes, seconds = (int(g) for g in match.group(3, 4, 5, 6))
                uptime = float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    if master is None:
        raise SocketError(f"unexpected `show proc` answer: {text.strip()[:200]!r}")
    return ProcInfo(int(master.group(1)), int(master.group(2)), int(master.group(3) or 0), tuple(workers), uptime)


def show_proc(master_socket: Path, timeout: float = 5.0) -> ProcInfo:
    return parse_show_proc(socket_command(master_socket, commands.SHOW_PROC, timeout=timeout))


@dataclass(frozen=True)
class ReloadAnswer:
    """What the master CLI says of a ``reload`` from HAProxy 2.7 on: the result and the startup log."""

    success: bool
    messages: tuple[str, ...]  # the new process's startup lines, PIDs taken out

    @property
    def reason(self) -> str:
        """HAProxy's own words for a failure: its alerts (else its last lines), on one line."""
        alerts = [line for line in self.messages if line.startswith("[ALERT]")]
        chosen = alerts[:3] or list(self.messages[-2:])
        return "; ".join(_STARTUP_LEVEL.sub("", line) for line in chosen)[:500] or "no startup messages"

    @property
    def failure(self) -> ReloadFailure:
        return ReloadFailure.FD_LIMIT if _FD_LIMIT_WORDS.search(self.reason) else ReloadFailure.REJECTED


_STARTUP_LINE = re.compile(r"^\[(NOTICE|WARNING|ALERT)\]\s*\(\d+\)\s*:\s*")
_STARTUP_LEVEL = re.compile(r"^\[(NOTICE|WARNING|ALERT)\]\s*")
#: HAProxy's words when it cannot get the descriptors its config asks for (``Cannot raise FD limit to
#: N, limit is M``, ``Too many open files`` from a bind or a socket pair).
_FD_LIMIT_WORDS = re.compile(r"FD limit|Too many open files|ulimit-n", re.IGNORECASE)


def parse_reload_answer(text: str) -> ReloadAnswer | None:
    """``Success=1`` or ``Success=0``, ``--``, then the startup log (HAProxy 2.7+); None when the master
    answered nothing (2.6), so the version is told by the answer, never assumed.

    The log is untrusted text: each line is kept printable and short, and the caller logs it escaped.
    """
    head, _, rest = text.strip().partition("\n")
    match = re.fullmatch(r"Success=([01])", head.strip())
    if match is None:
        return None
    lines = []
    for raw in rest.splitlines():
        line = "".join(ch if ch.isprintable() else "?" for ch in raw.strip())[:300]
        if line and line != "--":
            lines.append(_STARTUP_LINE.sub(lambda m: f"[{m.group(1)}] ", line))
    return ReloadAnswer(match.group(1) == "1", tuple(lines))


class ReloadPhase(enum.Enum):
    """Where a reload stands, as the master tells it."""

    NOT_STARTED = "not started"  # the master answers with the counters it had before
    LOADING = "loading"  # re-executing (CLI closed), or re-executed with no new worker yet
    CONFIRMED = "confirmed"
    FAILED = "failed"  # the master's failed-reload counter moved
    MASTER_GONE = "master gone"


def judge_reload(before: ProcInfo, after: ProcInfo | None, master_alive: bool | None) -> ReloadPhase:
    """One look at the master during a reload. ``after`` is None when its CLI did not answer;
    ``master_alive`` is None when its process cannot be seen from here (another PID namespace)."""
    if after is None:
        return ReloadPhase.MASTER_GONE if master_alive is False else ReloadPhase.LOADING
    if after.master_pid != before.master_pid:
        # HAProxy was restarted, not reloaded (a reload_command of `systemctl restart`): a new master
        # read the file on disk, which is the new config.
        return ReloadPhase.CONFIRMED if after.current_worker is not None else ReloadPhase.LOADING
    if after.reloads <= before.reloads:
        return ReloadPhase.NOT_STARTED
    if after.failed > before.failed:
        return ReloadPhase.FAILED
    worker = after.current_worker
    return ReloadPhase.CONFIRMED if worker is not None and worker != before.current_worker else ReloadPhase.LOADING


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces and parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_alive(pid: int) -> bool | None:
    """Whether ``pid`` runs (a zombie does not); None when this PID namespace cannot tell."""
    try:
        fields = _stat_fields(pid)
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return None
    return fields[0] not in ("Z", "X") if fields else None


def process_start_time(pid: int) -> float | None:
    """When ``pid`` started, as a Unix time precise to a clock tick; None where ``/proc`` hides it
    (the unit's ``ProtectProc=invisible``) or it is gone.

    psutil derives this from the boot time in whole seconds, too coarse to tell whether a worker
    started before or after a file was written; the boot clock gives the boot time to the tick.
    """
    try:
        start_ticks = int(_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None
    boot_epoch = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return boot_epoch + start_ticks / os.sysconf("SC_CLK_TCK")


def descriptors_asked(config_text: str) -> int | None:
    """The file descriptors a config makes HAProxy ask for at start, when it says (``ulimit-n``, else
    about two per ``maxconn``); None when HAProxy sizes itself to the limit it finds."""
    section = ""
    asked: dict[str, int] = {}
    for raw in config_text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if not raw[:1].isspace():
            section = words[0]
        elif section == "global" and len(words) == 2 and words[0] in ("ulimit-n", "maxconn") and words[1].isdigit():
            asked[words[0]] = int(words[1])
    if "ulimit-n" in asked:
        return asked["ulimit-n"]
    return 2 * asked["maxconn"] if "maxconn" in asked else None


def descriptor_limit(pid: int) -> int | None:
    """The hard ``Max open files`` of a process, from /proc; None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                hard = line.split()[4]
                return int(hard) if hard.isdigit() else None
    except (OSError, IndexError):
        return None
    return None


def no_master_text(master_socket: Path, error: SocketError) -> str:
    """Why there is no master to reload, with the setting that names the socket and how HAProxy must be
    started for it to exist: an operator who installed HAProxy's stock unit (no ``-S``) sees only that
    a socket is missing, not that the master CLI is a start option."""
    return (f"cannot reload: {error} (haproxy.master_socket): HAProxy must run in master-worker mode with "
            f"that master socket, started as haproxy -W -S {master_socket} -f <config>, or set "
            "haproxy.reload_command")


def reload(master_socket: Path, reload_command: tuple[str, ...] = (), timeout: float = 10.0,
           max_wait: float = 120.0, waiting: Callable[[], None] | None = None,
           descriptors: int | None = None) -> ProcInfo:
    """Reload HAProxy and wait until its master shows a new worker; raise :class:`ReloadError` if not.

    From HAProxy 2.7 on the master answers ``reload`` with its result and the new process's startup
    log: a failure is reported with HAProxy's own alerts. HAProxy 2.6 answers nothing, so there the
    result is read back from ``show proc`` alone. Past ``timeout`` the master is judged, not the
    clock (module docstring); ``waiting`` is called on each look while a slow load goes on, so the
    caller can show that it still makes progress (the systemd watchdog). ``descriptors`` is what the
    new config asks for (:func:`descriptors_asked`): a 2.6 failure is told as HAProxy's own file
    descriptor limit when the master may open fewer.
    """
    try:
        before = show_proc(master_socket)
    except SocketError as exc:
        if not reload_command:
            raise ReloadError(no_master_text(master_socket, exc), ReloadFailure.NO_MASTER) from None
        before = None
    started = time.monotonic()
    if reload_command:
        _run_reload_command(reload_command, timeout)
        if before is None:
            return ProcInfo(0, 0, 0, ())  # nothing to read back on hosts without a master socket
    else:
        try:
            answer = parse_reload_answer(socket_command(master_socket, commands.RELOAD, timeout=timeout))
        except SocketError:
            answer = None  # 2.7+ answers once the load is over: a slow one is judged from `show proc`
        if answer is not None and not answer.success:
            hint = ("; that is HAProxy's own file descriptor limit: raise LimitNOFILE of haproxy.service or lower "
                    "maxconn" if answer.failure is ReloadFailure.FD_LIMIT else "")
            raise ReloadError(f"HAProxy rejected the reload: {answer.reason}{hint}; the old worker keeps serving",
                              answer.failure)
    assert before is not None
    return _watch(master_socket, before, started, timeout, max(timeout, max_wait), waiting, descriptors)


def _watch(master_socket: Path, before: ProcInfo, started: float, timeout: float, max_wait: float,
           waiting: Callable[[], None] | None, descriptors: int | None) -> ProcInfo:
    """Look at the master until the reload is confirmed, failed, or still loading at ``max_wait``."""
    visible = process_alive(before.master_pid) is True
    slow_logged = False
    while True:
        try:
            after: ProcInfo | None = show_proc(master_socket, timeout=PROBE_TIMEOUT)
        except SocketError:
            after = None  # the master re-executes itself during a reload; its CLI is closed meanwhile
        phase = judge_reload(before, after, process_alive(before.master_pid) if visible else None)
        if phase is ReloadPhase.CONFIRMED:
            assert after is not None
            return after
        if phase is ReloadPhase.FAILED:
            assert after is not None
            limit = descriptor_limit(before.master_pid) if descriptors else None
            if descriptors and limit is not None and descriptors > limit:
                raise ReloadError(
                    f"HAProxy rejected the reload, most likely for its own file descriptor limit: the new config "
                    f"asks for about {descriptors} (global maxconn/ulimit-n) and HAProxy's master may open {limit}; "
                    "raise LimitNOFILE of haproxy.service or lower maxconn; the old worker keeps serving",
                    ReloadFailure.FD_LIMIT)
            raise ReloadError(
                f"HAProxy rejected the reload (failed reloads {before.failed} -> {after.failed}); its master CLI "
                "gives no reason before HAProxy 2.7, its log says why; the old worker keeps serving")
        if phase is ReloadPhase.MASTER_GONE:
            raise ReloadError(f"HAProxy's master (pid {before.master_pid}) exited during the reload",
                              ReloadFailure.MASTER_GONE)
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            if phase is ReloadPhase.NOT_STARTED:
                raise ReloadError(f"HAProxy's master shows no reload {timeout:g}s after it was asked for one",
                                  ReloadFailure.NOT_STARTED)
            if elapsed > max_wait:
                raise ReloadError(
                    f"HAProxy's master was still loading the new config after {max_wait:g}s "
                    "(haproxy.reload_max_wait); the file stays as written, the old worker serves until it is done",
                    ReloadFailure.STILL_LOADING)
            if not slow_logged:
                log.warning("reload not confirmed within %gs (haproxy.reload_timeout): HAProxy's master is still "
                            "loading the new config (%s); waiting up to %gs (haproxy.reload_max_wait), no second "
                            "reload meanwhile", timeout, _loading_sign(after), max_wait)
                slow_logged = True
            if waiting is not None:
                waiting()
        time.sleep(0.02 if elapsed < timeout else 0.25)


def _loading_sign(after: ProcInfo | None) -> str:
    return "its CLI is closed while it re-executes" if after is None else "re-executed, no new worker yet"


def _run_reload_command(argv: tuple[str, ...], timeout: float) -> None:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReloadError(f"reload command {' '.join(argv)!r} failed: {exc}", ReloadFailure.COMMAND) from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise ReloadError(
            f"reload command {' '.join(argv)!r} exited {result.returncode}: {message[-1] if message else ''}",
            ReloadFailure.COMMAND,
        )
