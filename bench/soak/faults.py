"""``--faults``: what goes wrong on a real host, injected in rotation during the soak's measured window.

The kinds, each undone in a ``finally`` (and again, idempotently, when the run stops, Ctrl-C included):

* ``consul_restart``: devconsul stops (its port refuses connections, pending blocking queries are cut)
  for 5 s, then starts again on the same port with the same catalog, the index going on from where it
  was: a Consul agent restarting (``DevConsulThread.stop()`` then ``start()``);
* ``socket_drip``: HAProxy's admin socket answers one byte every 0.2 s for 10 s (the daemon talks to
  it through :class:`~haproxy_sync.dev.hostile_socket.HostileSocket` for the whole run; only its mode
  changes), then answers normally again;
* ``readonly_config``: the directory holding the haproxy.cfg the daemon writes is read-only for 10 s
  (``mount --bind D D``, ``mount -o remount,ro,bind D``, then ``umount D``): EROFS on every write
  there. Needs root and mount(8); otherwise it is skipped with one line and the others still run.

Why measure recovery and not only survival: a daemon that stays up but stops following Consul after
a fault is as broken as one that died. After each fault the :class:`Observer` polls
``haproxy-sync status`` until Consul and HAProxy agree and the daemon is ready again, and records what
the fault cost: failed applies, failed Consul reads, the daemon's log lines in the window, its FDs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from haproxy_sync.dev.devconsul import DevConsulThread
from haproxy_sync.dev.hostile_socket import HostileSocket

from .sampler import MB, counter_delta

KINDS = ("consul_restart", "socket_drip", "readonly_config")
RECOVERY_BUDGET = 30.0  # seconds after a fault's end to wait for the daemon to agree with Consul again
MARGIN = 5.0  # a fault must end this long before the end of the churn


class Fault(Protocol):
    """One kind of fault: ``inject`` it, hold it ``seconds``, ``undo`` it (idempotent, from any thread)."""

    kind: str
    seconds: float

    def unavailable(self) -> str: ...  # why it cannot run here ("" when it can)
    def inject(self) -> dict[str, Any]: ...
    def undo(self) -> dict[str, Any]: ...
    def caught_up(self, since: float) -> bool | None: ...  # done what it held back since ``since``? None: n/a


class ConsulRestart:
    """devconsul down for ``seconds``, then back on the same port with the same catalog."""

    kind = "consul_restart"

    def __init__(self, consul: DevConsulThread, seconds: float = 5.0) -> None:
        self.consul = consul
        self.seconds = seconds
        self._lock = threading.Lock()
        self._down = False

    def unavailable(self) -> str:
        return ""

    def inject(self) -> dict[str, Any]:
        with self._lock:
            index = self.consul.index
            self._down = True
            self.consul.stop()
            return {"port": self.consul.port, "index_before": index}

    def undo(self) -> dict[str, Any]:
        with self._lock:
            if not self._down:
                return {}
            self.consul.start()
            self._down = False
            return {"index_after": self.consul.index}

    def caught_up(self, since: float) -> bool | None:
        return None


class SocketDrip:
    """The daemon's admin socket (the proxy in front of HAProxy's) dripping its answers for ``seconds``."""

    kind = "socket_drip"

    def __init__(self, proxy: HostileSocket, seconds: float = 10.0) -> None:
        self.proxy = proxy
        self.seconds = seconds
        self._started_at = 0

    def unavailable(self) -> str:
        return ""

    def inject(self) -> dict[str, Any]:
        self._started_at = self.proxy.exchanges
        self.proxy.mode = "drip"
        return {"interval_s": self.proxy.interval}

    def undo(self) -> dict[str, Any]:
        if self.proxy.mode == "pass":
            return {}
        self.proxy.mode = "pass"
        return {"exchanges_dripped": self.proxy.exchanges - self._started_at}

    def caught_up(self, since: float) -> bool | None:
        return None


def _mounts_at(directory: Path) -> int:
    """How many mounts stack on ``directory`` (``/proc/self/mountinfo``'s mount points, unescaped)."""
    target = str(directory)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        points = [line.split()[4] for line in handle if len(line.split()) > 4]
    return sum(1 for point in points if re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), point) == target)


class ReadOnlyDir:
    """``directory`` read-only for ``seconds``: a read-only bind mount of it over itself."""

    kind = "readonly_config"

    def __init__(self, directory: Path, watched: Path, seconds: float = 10.0) -> None:
        self.directory = directory.resolve()
        self.watched = watched  # the file the daemon writes there (haproxy.cfg): written again after the fault?
        self.seconds = seconds
        self._lock = threading.Lock()
        self._baseline = _mounts_at(self.directory) if self.directory.exists() else 0

    def unavailable(self) -> str:
        if os.geteuid() != 0:
            return "needs root (mount --bind)"
        if not (shutil.which("mount") and shutil.which("umount")):
            return "mount(8) or umount(8) not found"
        return ""

    @staticmethod
    def _run(*argv: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        if result.returncode != 0:
            raise OSError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip() or result.returncode}")

    def inject(self) -> dict[str, Any]:
        with self._lock:
            self._run("mount", "--bind", str(self.directory), str(self.directory))
            self._run("mount", "-o", "remount,ro,bind", str(self.directory))
            return {"directory": str(self.directory)}

    def undo(self) -> dict[str, Any]:
        """Unmount whatever this class stacked on the directory (also a bind whose remount failed)."""
        with self._lock:
            detail: dict[str, Any] = {}
            for attempt in range(5):
                if _mounts_at(self.directory) <= self._baseline:
                    return detail
                try:
                    self._run("umount", str(self.directory))
                except OSError as exc:  # busy: a file opened meanwhile through the read-only mount
                    detail["umount_retries"] = attempt + 1
                    detail["umount_error"] = str(exc)
                    time.sleep(0.5)
            while _mounts_at(self.directory) > self._baseline:
                self._run("umount", "-l", str(self.directory))
                detail["lazy_umount"] = True
            return detail

    def caught_up(self, since: float) -> bool | None:
        """Whether the daemon has written its file since the directory became writable again."""
        wall_since = time.time() - (time.monotonic() - since)
        try:
            return self.watched.stat().st_mtime >= wall_since
        except OSError:
            return False


@dataclass
class Injected:
    """One fault as it happened; times in seconds since the daemon was ready (the samples' ``t``)."""

    kind: str
    start: float
    end: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    converged_after_s: float | None = None  # from ``end`` until status agreed with Consul (None: not in budget)
    caught_up_after_s: float | None = None  # readonly_config: until haproxy.cfg was written again
    not_converged: str = ""  # the last reason status gave, when it did not agree within the budget
    window: dict[str, Any] = field(default_factory=dict)  # what happened from ``start`` until converged

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_NOISE = re.compile(r"^\S+ (?=level=)|\b\d+(\.\d+)?(ms|s)?\b")


def log_window(path: Path, start: int, end: int, keep: int = 8) -> dict[str, Any]:
    """The daemon's log lines between two offsets: counts by level, and its distinct warnings and errors
    (numbers and the timestamp masked to group them), most frequent first."""
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            text = handle.read(max(0, end - start)).decode(errors="replace")
    except OSError:
        text = ""
    lines = text.splitlines()
    counts = Counter({"warning": 0, "error": 0, "traceback": 0})
    seen: Counter[str] = Counter()
    first: dict[str, str] = {}
    for line in lines:
        level = "error" if ("level=error" in line or "level=critical" in line) else (
            "warning" if "level=warning" in line else "")
        counts["traceback"] += "Traceback" in line
        if not level:
            continue
        counts[level] += 1
        key = _NOISE.sub("N", line)
        seen[key] += 1
        first.setdefault(key, line[line.find("level="):][:400] if "level=" in line else line[:400])
    return {"lines": len(lines), **counts, "notable": [{"count": n, "line": first[key]} for key, n in
                                                        seen.most_common(keep)]}


@dataclass
class Observer:
    """What the scheduler reads around each fault: the daemon's /metrics, its log, its process, whether
    it agrees with Consul (``converged``: "" when ``haproxy-sync status`` is healthy, else why not), and
    how many churn writes failed (Consul down refuses them too)."""

    metrics: Callable[[], dict[str, float]]
    converged: Callable[[], str]
    log_path: Path
    churn_errors: Callable[[], int]
    pid: int

    def snapshot(self) -> dict[str, Any]:
        try:
            process = psutil.Process(self.pid)
            footprint = {"fds": process.num_fds(), "rss_mb": round(process.memory_info().rss / MB, 2),
                         "threads": process.num_threads()}
        except psutil.Error as exc:
            footprint = {"error": f"daemon process: {exc}"}
        try:
            offset = self.log_path.stat().st_size
        except OSError:
            offset = 0
        return {"at": time.monotonic(), "metrics": self.metrics(), "log_offset": offset,
                "churn_errors": self.churn_errors(), **footprint}

    def window(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """What the daemon did between two snapshots."""
        start, end = before["metrics"], after["metrics"]
        return {
            "seconds": round(after["at"] - before["at"], 1),
            "apply_failures": counter_delta(start, end, "haproxy_sync_apply_failures_total"),
            "write_failures": counter_delta(start, end, "haproxy_sync_config_write_failures_total"),
            "consul_errors": counter_delta(start, end, "haproxy_sync_consul_errors_total"),
            "applies": counter_delta(start, end, "haproxy_sync_applies_total"),
            "metrics_missing": not start or not end,  # the daemon's /metrics did not answer
            "churn_errors": after["churn_errors"] - before["churn_errors"],
            "fds": [before.get("fds"), after.get("fds")],
            "rss_mb": [before.get("rss_mb"), after.get("rss_mb")],
            "log": log_window(self.log_path, before["log_offset"], after["log_offset"]),
        }


class FaultScheduler:
    """Injects ``faults`` in rotation, one every ``every`` seconds from ``first_at`` (seconds after
    ``zero``, a monotonic time) while the fault can end ``MARGIN`` s before ``deadline``; after each, waits
    (bounded) until the daemon agrees with Consul again. Runs in a thread of its own (:meth:`start`);
    :meth:`close` stops it and undoes any fault still in place."""

    def __init__(self, faults: Sequence[Fault], observer: Observer, *, every: float, first_at: float, zero: float,
                 deadline: float, say: Callable[[str], None] = print) -> None:
        self.faults = list(faults)
        self.observer = observer
        self.every = every
        self.first_at = first_at
        self.zero = zero
        self.deadline = deadline
        self.say = say
        self.injected: list[Injected] = []
        self.skipped: dict[str, str] = {}
        self.rotation: list[Fault] = []
        for fault in self.faults:
            if why := fault.unavailable():
                self.skipped[fault.kind] = why
                say(f"soak: fault {fault.kind} skipped: {why}")
            else:
                self.rotation.append(fault)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults", daemon=True)

    def planned(self) -> int:
        """How many fault slots fit the run (whatever the rotation holds)."""
        longest = max((fault.seconds for fault in self.rotation), default=0.0)
        room = self.deadline - self.zero - self.first_at - longest - MARGIN
        return int(room // self.every) + 1 if room >= 0 and self.rotation else 0

    def start(self) -> None:
        self._thread.start()

    def _t(self, at: float | None = None) -> float:
        return round((time.monotonic() if at is None else at) - self.zero, 1)

    def _run(self) -> None:
        slot = 0
        while self.rotation and not self._halt.is_set():
            fault = self.rotation[slot % len(self.rotation)]
            at = self.zero + self.first_at + slot * self.every
            if at + fault.seconds + MARGIN > self.deadline or self._halt.wait(max(0.0, at - time.monotonic())):
                return
            slot += 1
            next_at = self.zero + self.first_at + slot * self.every
            if not self._one(fault, budget_until=min(next_at - 1.0, self.deadline)):
                return

    def _one(self, fault: Fault, budget_until: float) -> bool:
        """Inject, hold, undo (in a finally), then watch the recovery; False: stop injecting."""
        before = self.observer.snapshot()
        record = Injected(fault.kind, self._t())
        self.injected.append(record)
        undone = False
        try:
            try:
                record.detail.update(fault.inject())
                self.say(f"soak: fault {fault.kind} at {record.start:.0f} s for {fault.seconds:g} s")
                self._halt.wait(fault.seconds)
            finally:
                record.detail.update(fault.undo())
                undone = True
                record.end = self._t()
        except (OSError, RuntimeError, subprocess.SubprocessError, ValueError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            if not undone:
                self.say(f"soak: fault {fault.kind}: could not undo it ({record.error}); no more faults this run")
                return False
            self.say(f"soak: fault {fault.kind} skipped from now on: {record.error}")
            self.skipped[fault.kind] = record.error
            self.rotation.remove(fault)
            record.window = self.observer.window(before, self.observer.snapshot())
            return True
        ended = time.monotonic()
        self._recover(fault, record, ended, min(max(budget_until, ended + 5.0), ended + RECOVERY_BUDGET))
        record.window = self.observer.window(before, self.observer.snapshot())
        failures = sum(record.window["apply_failures"].values())
        log = record.window["log"]
        if record.converged_after_s is None and self._halt.is_set():
            record.not_converged = f"the run stopped first; last: {record.not_converged}"
        self.say(f"soak: fault {fault.kind} undone at {record.end:.0f} s; "
                 + (f"converged {record.converged_after_s:.1f} s later" if record.converged_after_s is not None
                    else f"NOT converged within {record.window['seconds']:.0f} s ({record.not_converged})")
                 + f"; failed applies {failures:.0f}; log {log['warning']} warnings, {log['error']} errors")
        return True

    def _recover(self, fault: Fault, record: Injected, ended: float, until: float) -> None:
        """Poll until status agrees with Consul and the fault's own work is caught up, or ``until``."""
        while True:
            now = time.monotonic()
            if record.converged_after_s is None:
                reason = self.observer.converged()
                if not reason:
                    record.converged_after_s = round(time.monotonic() - ended, 1)
                record.not_converged = reason
            caught_up = fault.caught_up(ended) if record.caught_up_after_s is None else True
            if caught_up and record.caught_up_after_s is None:
                record.caught_up_after_s = round(time.monotonic() - ended, 1)
            if record.converged_after_s is not None and caught_up is not False:
                return
            if now >= until or self._halt.wait(1.0):
                return

    def close(self) -> None:
        """Stop injecting and undo whatever is in place; safe to call twice, and from a Ctrl-C's clean-up."""
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        for fault in self.faults:
            with contextlib.suppress(OSError, RuntimeError, subprocess.SubprocessError):
                fault.undo()

    def last(self) -> str:
        """The latest fault, for an error message: ``consul_restart at 88 s (ended 93 s)``."""
        if not self.injected:
            return "no fault injected yet"
        record = self.injected[-1]
        ended = f"ended {record.end:.0f} s" if record.end is not None else "still in place"
        return f"last fault {record.kind} at {record.start:.0f} s ({ended})"

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the report: every fault, the kinds skipped and why, and the totals."""
        records = [record.as_dict() for record in self.injected]
        done = [r for r in self.injected if not r.error]
        return {
            "every_s": self.every,
            "first_at_s": self.first_at,
            "kinds": [fault.kind for fault in self.faults],
            "skipped": self.skipped,
            "injected": records,
            "count": dict(Counter(r.kind for r in done)),
            "not_converged": [f"{r.kind} at {r.start:.0f} s: {r.not_converged}" for r in done
                              if r.converged_after_s is None],
            "apply_failures_in_faults": sum(sum(r.window.get("apply_failures", {}).values()) for r in self.injected),
            "consul_errors_in_faults": sum(sum(r.window.get("consul_errors", {}).values()) for r in self.injected),
            "churn_errors_in_faults": sum(r.window.get("churn_errors", 0) for r in self.injected),
            "log_in_faults": {level: sum(r.window.get("log", {}).get(level, 0) for r in self.injected)
                              for level in ("warning", "error", "traceback")},
        }
