"""The HAProxy side of an apply: write and validate the files, reload through the master, send the
Runtime API commands, read back what HAProxy runs and repair drift. The daemon decides when; this
module does it. Every function here does I/O; the decisions they carry out are made in plan.py.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import jinja2

from haproxy_sync import certstore, haproxy, master, running_claim, stats_file
from haproxy_sync.commands import Command
from haproxy_sync.config import HAProxySettings, Settings
from haproxy_sync.plan import BackendSlots, Drift, Running, find_drift
from haproxy_sync.render import render
from haproxy_sync.routing import Routing, map_commands, map_text, parse_map_file, route_drift

if TYPE_CHECKING:
    from haproxy_sync.pipeline import Prepared

log = logging.getLogger(__name__)


def write_live(settings: Settings, text: str, routes: str | None = None) -> None:
    """Validate and swap in the live config (and the routes map) with the mode and group asked for.

    The config names the map file, so ``haproxy -c`` needs one: a missing map is written first.
    Otherwise the map is replaced only after the config passed, so a rejected config leaves both files
    as they were.
    """
    hap = settings.haproxy
    map_path = hap.routes_map_path
    if routes is not None and not map_path.exists():
        write_routes(settings, routes)
    haproxy.atomic_write(hap.config_path, text, binary=hap.binary, mode=hap.config_mode, group=hap.config_group)
    if routes is not None:
        write_routes(settings, routes)
    if haproxy.features(hap.binary).stats_file and haproxy.read_text(hap.stats_file_path) is None:
        stats_file.clear_stats_file(hap.stats_file_path)  # HAProxy 3.0 warns at every start without one


def write_routes(settings: Settings, routes: str) -> None:
    """Swap in the routes map file (whole old or whole new, like the config; HAProxy reads it at start)."""
    hap = settings.haproxy
    if haproxy.read_text(hap.routes_map_path) != routes:
        haproxy.atomic_write(hap.routes_map_path, routes, mode=hap.config_mode, group=hap.config_group)


def running_config_is_current(hap: HAProxySettings, text: str) -> bool:
    """Whether HAProxy's current worker runs ``text``, the live config on disk.

    This lets a restarted daemon (or one that found HAProxy down) know whether a reload is still owed.
    The claim the daemon wrote when it last knew (:mod:`running_claim`), checked against the master
    CLI's ``show proc``; else the worker's start against the file's mtime (a worker reads the config
    when it starts, so a worker younger than the file runs the file): from ``/proc`` where it shows
    the worker, from ``show proc``'s uptime where the unit hides ``/proc``. A
    current answer without a claim writes one, so the next runtime change keeps it up to date.
    """
    try:
        proc = master.show_proc(hap.master_socket)
        if proc.current_worker is None:
            return False
        claim = running_claim.read_claim(hap.server_state_file)
        if claim is not None and claim.vouches(proc, text):
            return True
        started = master.process_start_time(proc.current_worker)
        if not running_claim.started_after(proc, hap.config_path.stat().st_mtime, time.time(), started):
            return False
    except (haproxy.HAProxyError, OSError, ValueError):
        return False
    _claim_for(hap, proc, text)
    return True


def _claim_for(hap: HAProxySettings, proc: master.ProcInfo, text: str) -> None:
    """Write down that ``proc``'s current worker runs ``text`` (nothing without a master to name)."""
    if proc.master_pid > 0 and proc.current_worker is not None:
        running_claim.write_claim(hap.server_state_file,
                                  running_claim.Claim(proc.master_pid, proc.current_worker, running_claim.digest(text)))


def _claim_follows(hap: HAProxySettings, text: str) -> None:
    """After a runtime change reached the disk: the worker the claim names now runs ``text``.

    Only when ``show proc`` still names that worker: after a reload nobody asked for (``systemctl
    reload haproxy``) what the new worker runs is not known here, and the claim stays stale, so the
    next start reloads rather than trusting it.
    """
    claim = running_claim.read_claim(hap.server_state_file)
    if claim is None:
        return
    try:
        proc = master.show_proc(hap.master_socket)
    except (haproxy.HAProxyError, OSError):
        return
    if proc.master_pid == claim.master_pid and proc.current_worker == claim.worker_pid:
        _claim_for(hap, proc, text)


@dataclass(frozen=True)
class ReloadReport:
    """What the reload path did, for the log sentence and the metrics."""

    action: str
    reloaded: bool = False
    seconds: float = 0.0
    old_workers: int = 0
    worker: int | None = None  # the new worker's PID, when the master named it

    def sentence(self) -> str:
        if not self.reloaded:
            return self.action
        piling = f"; {self.old_workers} old workers still serving long-lived connections" if self.old_workers else ""
        return f"{self.action}; reloaded in {self.seconds * 1000:.0f} ms{piling}"


def apply_config(
    settings: Settings, text: str, tables: Mapping[str, BackendSlots] | None = None, routes: str | None = None,
    waiting: Callable[[], None] | None = None, admin_socket: bool = True,
) -> ReloadReport:
    """The reload path: write ``text`` as the live config (validated) and have HAProxy run it.

    Raises :class:`haproxy.ValidationError` (nothing changed), or :class:`master.ReloadError` after
    putting the last confirmed config back when HAProxy refused the new one (not when its master was
    still loading it: HAProxy may yet run it). ``waiting`` is called while a slow load goes on.
    ``admin_socket`` false: it just failed (hung, dripping), so the reload does not wait on it again to
    save server state and counters; the new worker starts from the config alone.
    """
    hap = settings.haproxy
    path = hap.config_path
    if haproxy.read_text(path) == text:
        routes_changed = routes is not None and haproxy.read_text(hap.routes_map_path) != routes
        if routes is not None:
            write_routes(settings, routes)
        if not routes_changed and running_config_is_current(hap, text):
            haproxy.remember_last_good(path)
            return ReloadReport("unchanged; HAProxy already runs it")
        action = "unchanged on disk"
    else:
        write_live(settings, text, routes)
        action = "written"
    keep = None if tables is None else functools.partial(_state_fits, tables)
    try:
        state_saved = admin_socket and haproxy.save_server_state(hap.stats_socket, hap.server_state_file, keep)
    except haproxy.HAProxyError as exc:  # a full or read-only state dir must not stop the reload
        log.warning("%s; reloading without it: the new worker's checks rebuild health state", exc)
        state_saved = False
    if not state_saved:
        _discard_server_state(hap.server_state_file)
    carry_counters = haproxy.features(hap.binary).stats_file
    try:
        saved = not carry_counters or (admin_socket and stats_file.save_stats_file(hap.stats_socket,
                                                                                   hap.stats_file_path))
    except haproxy.HAProxyError as exc:
        log.warning("%s", exc)
        saved = False
    if not saved:
        log.warning("could not save HAProxy's counters to %s before the reload (dump stats-file); the new "
                    "worker's counters start from zero", hap.stats_file_path)
    started = time.monotonic()
    try:
        info = master.reload(hap.master_socket, hap.reload_command, hap.reload_timeout, hap.reload_max_wait,
                             waiting, master.descriptors_asked(text))
    except master.ReloadError as exc:
        # Disk must keep saying what runs: put back the config HAProxy last confirmed, if there is one.
        if (exc.outcome_known and haproxy.read_text(haproxy.last_good_path(path)) not in (None, text)
                and haproxy.restore_last_good(path)):
            raise master.ReloadError(f"{exc}; restored {haproxy.last_good_path(path).name}", exc.failure) from None
        raise
    _claim_for(hap, info, text)
    try:
        haproxy.remember_last_good(path)
        if carry_counters:
            stats_file.clear_stats_file(hap.stats_file_path)
    except haproxy.HAProxyError as exc:  # HAProxy runs the new config: only the copies beside it are behind
        log.warning("after the reload: %s; the next good apply writes it again", exc)
    worker = f" (worker {info.current_worker})" if info.current_worker else ""
    return ReloadReport(f"{action}{worker}", True, time.monotonic() - started, max(0, len(info.workers) - 1),
                        info.current_worker)


def _discard_server_state(state_file: Path) -> None:
    """No fresh server state for this reload: an older file would bring back servers as they were then
    (off plan until the next read-back), so the new worker starts from the config instead."""
    try:
        state_file.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove the stale server state %s: %s; the new worker may start servers as they "
                    "were at the last reload, the read-back after it corrects them", state_file, exc.strerror or exc)


def _state_fits(tables: Mapping[str, BackendSlots], state: haproxy.ServerState) -> bool:
    """Whether a saved server state may carry over a reload: only when the slot stays what it ran."""
    table = tables.get(state.backend)
    slot = next((s for s in table.slots if s.name == state.name), None) if table else None
    if slot is None:
        return False
    running = {(state.backend, slot.name): (state.address, state.port, state.weight, state.in_maintenance)}
    return find_drift({state.backend: BackendSlots(state.backend, (slot,))}, running).empty


def routes_on_disk(settings: Settings) -> dict[str, str]:
    """The routes the map file holds: who holds which route when the daemon has not routed yet."""
    return parse_map_file(haproxy.read_text(settings.haproxy.routes_map_path) or "")


def read_routes(settings: Settings) -> dict[str, str]:
    """The routes HAProxy runs now (``show map``)."""
    return haproxy.show_map(settings.haproxy.stats_socket, settings.haproxy.routes_map_path)


def read_running(stats_socket: Path, backend: str | None = None) -> dict[tuple[str, str], Running]:
    """What every server (of ``backend``, or of all) runs now, as (address, port, weight, in maintenance)."""
    return {
        (s.backend, s.name): (s.address, s.port, s.weight, s.in_maintenance)
        for s in haproxy.servers_state(stats_socket, backend)
    }


def inherited_routes(settings: Settings, live: str) -> dict[str, str] | None:
    """The routes HAProxy runs when its current worker is known to run ``live``, else None.

    A restarted daemon starts from what HAProxy runs: with this it plans Runtime API commands from the
    live config instead of reloading to be sure (see :func:`running_config_is_current`).
    """
    if not running_config_is_current(settings.haproxy, live):
        return None
    try:
        routes = read_routes(settings)
        # What HAProxy runs is the file a failed reload puts back, as after a confirmed reload.
        haproxy.remember_last_good(settings.haproxy.config_path)
    except haproxy.HAProxyError:
        return None
    return routes


def old_workers(master_socket: Path) -> int | None:
    """HAProxy's workers of older generations still alive (long-lived connections keep them), from
    ``show proc``; None when the master does not answer."""
    try:
        workers = master.show_proc(master_socket).workers
    except (haproxy.HAProxyError, OSError):
        return None
    return max(0, len(workers) - 1)


class RuntimeApplyError(haproxy.HAProxyError):
    """The Runtime API did not leave HAProxy running what was planned; a reload will."""


def apply_runtime(
    settings: Settings, tables: Mapping[str, BackendSlots], commands: tuple[Command, ...],
    routing: Routing | None = None,
) -> str:
    """The fast path: runtime commands, then read back what HAProxy runs; raises if it is off plan.

    Writing the config and the routes map to disk is the caller's next step (:func:`persist`, both
    files by one writer), kept off this path so that convergence never waits for ``haproxy -c``.
    """
    hap = settings.haproxy
    started = time.monotonic()
    answers = haproxy.runtime_commands(hap.stats_socket, commands) if commands else ""
    # Read back what the commands touched: with thousands of backends, all servers is megabytes.
    touched = {c.backend for c in commands if c.backend is not None}
    if len(touched) > 20:
        running = read_running(hap.stats_socket)
    else:
        running = {key: value for backend in touched for key, value in read_running(hap.stats_socket, backend).items()}
    drift = find_drift({b: tables[b] for b in touched if b in tables}, running)
    details = [*drift.missing, *drift.found]
    routes_changed = routing is not None and any(c.changes_map for c in commands)
    if routing is not None and routes_changed:
        details += map_commands(str(hap.routes_map_path), read_routes(settings), routing.map_entries)
    if details:
        raise RuntimeApplyError(f"HAProxy does not run the plan after {len(commands)} commands: "
                                + "; ".join(details[:3]) + (f" (HAProxy said: {answers[:200]})" if answers else ""))
    return f"runtime API: {len(commands)} commands in {(time.monotonic() - started) * 1000:.0f} ms, no reload"


def persist(settings: Settings, text: str, routes: str | None = None) -> None:
    """Write what HAProxy now runs to disk (validated), so a restart or a reload gives the same state."""
    write_live(settings, text, routes)
    haproxy.remember_last_good(settings.haproxy.config_path)
    _claim_follows(settings.haproxy, text)


def repair_drift(settings: Settings, tables: Mapping[str, BackendSlots], routing: Routing | None = None) -> Drift:
    """Read what HAProxy runs, and put right what differs from the plan (someone's `disable server`,
    a `del map`, state a reload brought back). Returns the drift found; slots HAProxy lacks need a reload."""
    drift = find_drift(tables, read_running(settings.haproxy.stats_socket))
    if routing is not None:
        running, planned = read_routes(settings), routing.map_entries
        fixes = map_commands(str(settings.haproxy.routes_map_path), running, planned)
        drift = Drift(drift.commands + tuple(fixes), drift.found + tuple(route_drift(running, planned)), drift.missing)
    if drift.commands:
        haproxy.runtime_commands(settings.haproxy.stats_socket, drift.commands)
    return drift


def check_prepared(settings: Settings, template: jinja2.Template, features: haproxy.Features,
                   prepared: Prepared) -> None:
    """``haproxy -c`` on ``prepared`` as it would be written, with its map, in a temp dir.

    Touches nothing live: the config is rendered again naming a temporary map file. Raises
    ``HAProxyError`` (``ValidationError`` when HAProxy rejects it).
    """
    binary = haproxy.find_binary(settings.haproxy.binary)
    if binary is None:
        raise haproxy.HAProxyError(f"haproxy binary {settings.haproxy.binary!r} not found ({haproxy.BINARY_SEARCH}); "
                                   "install HAProxy or set haproxy.binary")
    with tempfile.TemporaryDirectory(prefix="haproxy-sync-check-") as tmp:
        map_path = Path(tmp) / "routes.map"
        map_path.write_text(prepared.routes)
        local = dataclasses.replace(settings, haproxy=dataclasses.replace(settings.haproxy, routes_map=map_path),
                                    tls=certstore.trial_store(settings.tls, Path(tmp) / "certs"))
        path = Path(tmp) / "haproxy.cfg"
        path.write_text(render(prepared.tables, local, template, prepared.routing, features, prepared.rebind_socket))
        haproxy.validate(binary, path)


def refusal(settings: Settings, template: jinja2.Template, features: haproxy.Features,
            prepared: Prepared) -> str | None:
    """:func:`check_prepared` as a verdict: None when HAProxy accepts ``prepared``, else its alerts."""
    try:
        check_prepared(settings, template, features, prepared)
    except haproxy.ValidationError as exc:
        return exc.summary
    except (haproxy.HAProxyError, OSError) as exc:  # no binary, no room in the temp dir: no verdict on it
        return f"cannot run haproxy -c: {exc}"
    return None


class Applier(Protocol):
    """What the daemon asks of the HAProxy side. :class:`HAProxyApplier` is the real one; a unit test
    of the daemon's decisions gives it one that records and answers, with no process and no socket.
    Calls run in worker threads (they block on files, ``haproxy -c`` and sockets)."""

    def read_live(self, settings: Settings) -> str | None: ...

    def features(self, settings: Settings) -> haproxy.Features: ...

    def running(self, settings: Settings) -> dict[tuple[str, str], Running]: ...

    def restore_routes(self, settings: Settings, routing: Routing) -> None: ...

    def routes_on_disk(self, settings: Settings) -> dict[str, str]: ...

    def inherit(self, settings: Settings, live: str) -> dict[str, str] | None: ...

    def old_workers(self, settings: Settings) -> int | None: ...

    def runtime(self, settings: Settings, tables: Mapping[str, BackendSlots], sequence: tuple[Command, ...],
                routing: Routing) -> str: ...

    def reload(self, settings: Settings, text: str, tables: Mapping[str, BackendSlots] | None,
               routes: str | None, waiting: Callable[[], None] | None = None,
               admin_socket: bool = True) -> ReloadReport: ...

    def repair(self, settings: Settings, tables: Mapping[str, BackendSlots], routing: Routing | None) -> Drift: ...

    def persist(self, settings: Settings, text: str, routes: str | None = None) -> None: ...

    def check(self, settings: Settings, template: jinja2.Template, features: haproxy.Features,
              prepared: Prepared) -> str | None: ...


class HAProxyApplier:
    """The real HAProxy side: files, ``haproxy -c``, the master and the runtime socket."""

    def read_live(self, settings: Settings) -> str | None:
        return haproxy.read_text(settings.haproxy.config_path)

    def features(self, settings: Settings) -> haproxy.Features:
        return haproxy.features(settings.haproxy.binary)

    def running(self, settings: Settings) -> dict[tuple[str, str], Running]:
        return read_running(settings.haproxy.stats_socket)

    def restore_routes(self, settings: Settings, routing: Routing) -> None:
        write_routes(settings, map_text(routing.map_entries))

    def routes_on_disk(self, settings: Settings) -> dict[str, str]:
        return routes_on_disk(settings)

    def inherit(self, settings: Settings, live: str) -> dict[str, str] | None:
        return inherited_routes(settings, live)

    def old_workers(self, settings: Settings) -> int | None:
        return old_workers(settings.haproxy.master_socket)

    def runtime(self, settings: Settings, tables: Mapping[str, BackendSlots], sequence: tuple[Command, ...],
                routing: Routing) -> str:
        return apply_runtime(settings, tables, sequence, routing)

    def reload(self, settings: Settings, text: str, tables: Mapping[str, BackendSlots] | None,
               routes: str | None, waiting: Callable[[], None] | None = None,
               admin_socket: bool = True) -> ReloadReport:
        return apply_config(settings, text, tables, routes, waiting, admin_socket)

    def repair(self, settings: Settings, tables: Mapping[str, BackendSlots], routing: Routing | None) -> Drift:
        return repair_drift(settings, tables, routing)

    def persist(self, settings: Settings, text: str, routes: str | None = None) -> None:
        persist(settings, text, routes)

    def check(self, settings: Settings, template: jinja2.Template, features: haproxy.Features,
              prepared: Prepared) -> str | None:
        return refusal(settings, template, features, prepared)
