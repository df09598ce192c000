"""When things happen: the loop that takes what the watches delivered to HAProxy, and its timers.

A blocking-query watch per service (``watchset``) records the newest value per service and wakes
the loop; the loop waits for quiet (``wait_min``, at most ``wait_max``, consul-template's meaning),
takes everything that arrived as one snapshot, lets hold-down and the guard narrow it, and hands it
to the one pipeline (``pipeline.observe/prepare/decide``) that ``render --plan`` also uses. The
decision is carried out by the applier (``apply``); blocking work runs in worker threads. Deadlines
come from the collaborators (guard, hold-down, drains, reconcile, retry) and wake the loop.

Signals, the metrics server and the watchdog are wired around the loop by ``wiring.serve``; their
handlers only set flags and wake the loop, which acts on them at the top of its next cycle. Each
cycle logs one sentence saying what it decided and why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable

import consul.aio
import jinja2
import sdnotify

from haproxy_sync import haproxy, isolate, logs, master
from haproxy_sync.apply import (
    Applier,
    HAProxyApplier,
)
from haproxy_sync.bursts import Bursts
from haproxy_sync.canary import only_shares_differ, shares_in_force
from haproxy_sync.catalog import Service, Snapshot
from haproxy_sync.certstore import CertSync
from haproxy_sync.config import ConfigError, Settings
from haproxy_sync.consul import (
    CatalogWatch,
    ServiceWatch,
    WatchUpdate,
    backoff_delay,
    check_token,
    make_client,
    service_queries,
)
from haproxy_sync.damping import HoldDown
from haproxy_sync.drains import DrainWatch
from haproxy_sync.guard import CatalogGuard, ServiceGuard
from haproxy_sync.metrics import Metrics, StateView, WatchView
from haproxy_sync.outcome import Outcome, RunningState
from haproxy_sync.persist import BackgroundWriter, Files
from haproxy_sync.pipeline import (
    Baseline,
    Observed,
    Prepared,
    adoptable,
    check_template,
    decide,
    isolate_refusal,
    observe,
    prepare,
)
from haproxy_sync.plan import (
    BackendSlots,
    change_fields,
    describe,
    diff_snapshots,
    draining,
    servers_by_state,
    slots_from_config,
)
from haproxy_sync.reasons import ApplyPath, FailureStage, ReloadFailure, ReloadKind, ReloadReason, SkipKind
from haproxy_sync.reconcile import Finding, read_back_after_reload, reconcile
from haproxy_sync.render import TemplateError, load_template, render
from haproxy_sync.reservations import RouteMemory
from haproxy_sync.routing import Routing
from haproxy_sync.second_look import reread_catalog, reread_held
from haproxy_sync.watchset import WatchSet

log = logging.getLogger(__name__)


#: Non-blocking reads (first reads, and re-reads after an error) in flight at once, across all watches.
FIRST_READS_IN_FLIGHT = 32
#: Longest each step of a stop (the owed write, closing watches and the client) may take.
STOP_STEP_TIMEOUT = 0.2
#: Least time between two background writes of haproxy.cfg after runtime changes (disk follows within it).
PERSIST_INTERVAL = 1.0
#: After a failed look at the certificates, the next one comes this soon (or at tls.check_interval).
CERT_RETRY = 10.0


class DaemonError(Exception):
    """The daemon cannot start (e.g. its metrics address is taken); the message says what to do."""


class Daemon:
    """Keeps HAProxy in step with Consul until stopped."""

    def __init__(self, settings: Settings, reload_settings: Callable[[], Settings] | None = None,
                 applier: Applier | None = None) -> None:
        self.settings = settings
        self.applier: Applier = applier or HAProxyApplier()
        self.reload_settings = reload_settings
        self.notifier = sdnotify.SystemdNotifier()
        self.latest: dict[str, Service] = {}
        self.rejections = isolate.Rejections()  # instances HAProxy refused, left out until they change
        self.runs: RunningState | None = None  # what HAProxy runs after the last good apply, replaced whole
        self.watches = WatchSet(lambda: self.client, self._on_update, self._on_catalog, self._count_consul_error,
                                asyncio.Semaphore(FIRST_READS_IN_FLIGHT))
        self.discovered: frozenset[str] = frozenset()  # services carrying the discovery tag
        self.routes = RouteMemory(lambda: self.applier.routes_on_disk(self.settings))
        self.template: jinja2.Template | None = None
        self._wake = asyncio.Event()
        self.stopping = asyncio.Event()  # set by request_stop: wiring.serve bounds how long a stop takes
        self.busy_since: float | None = None  # when the loop woke for the step it is in; None while it waits
        self._changed = False
        self.bursts = Bursts()  # whether the pending change opens a burst (applied at once) or joins one
        self._stop = False
        self._hup = False
        self._reread_reason = "SIGHUP"
        self._structure_changed = False  # template or settings changed: the next apply reloads
        self._rebind_socket = False  # HAProxy's admin socket file was deleted: the next reload binds it again
        self._rejected_config = ""  # why the last re-read of the settings was refused, until one is taken
        self._retry_at: float | None = None  # after a failed apply
        self.drains = DrainWatch(settings.haproxy.stats_socket)  # what draining servers carry, drain deadlines
        self.hold_down = HoldDown()
        self._client: consul.aio.Consul | None = None  # made once, inside the running loop (run)
        self._unrouted: tuple[object, ...] = ()  # last logged, so each change is logged once
        self._reload_not_before = 0.0  # reload budget
        self._reconcile_at: float | None = None  # next read-back of what HAProxy runs
        self._failures = 0
        self._no_master = False  # the last apply failed for want of a master socket: its retries log at debug
        self._first_unapplied: float | None = None  # when the oldest change not yet applied was seen
        self._last_apply: tuple[str, str, float | None] = ("", "", None)
        self.metrics = Metrics(self.state_view)
        count = self._count_guard
        self.guard = ServiceGuard(count)
        self.catalog_guard = CatalogGuard(count)
        self._ready_sent = False
        self._change_fields: dict[str, str] = {}  # service and instance fields of the cycle's change, for its line
        self._ready_without_consul_at: float | None = None  # when a start still waiting for Consul tells READY
        self.writer = BackgroundWriter(self._persist, self._persist_failed,
                                       (haproxy.HAProxyError,), PERSIST_INTERVAL)
        self.certs: CertSync | None = CertSync() if settings.tls.enabled else None  # the HTTPS certificates

    # --- signals and updates: set flags, wake the loop ---

    def _on_update(self, update: WatchUpdate) -> None:
        self.latest[update.service.name] = update.service
        if self._first_unapplied is None:
            self._first_unapplied = update.seen_at
        self.bursts.seen(update.seen_at, self.settings.sync.wait_min)
        self._changed = True
        self._wake.set()

    def _on_catalog(self, names: frozenset[str], seen_at: float) -> None:
        """The set of tagged services changed: start and stop health watches, then re-plan."""
        names = self._guard_catalog(names)
        added, removed = sorted(names - self.discovered), sorted(self.discovered - names)
        self.discovered = names
        if added or removed:
            log.info("discovery: %d services tagged %r (+%s -%s)", len(names), self.settings.discovery.tag,
                     ",".join(added[:10]) or "-", ",".join(removed[:10]) or "-")
        if self._client is not None:
            self._sync_watches()
        if self._first_unapplied is None:
            self._first_unapplied = seen_at
        self.bursts.seen(seen_at, self.settings.sync.wait_min)
        self._changed = True
        self._wake.set()

    def _guard_catalog(self, names: frozenset[str]) -> frozenset[str]:
        return self.catalog_guard.judge(self.discovered, names, self.applied is not None,
                                        self.settings.discovery.max_drop, time.monotonic(),
                                        self.settings.sync.guard_delay)

    async def _reread_catalog(self) -> None:
        """The catalog guard's second look (``second_look``)."""
        discovery, sync = self.settings.discovery, self.settings.sync
        if self.watches.catalog is None:  # discovery turned off by a re-read of the settings
            self.catalog_guard.due_at = None
            return
        names = await reread_catalog(self.client, self.catalog_guard, discovery.tag, discovery.max_drop,
                                     sync.guard_delay, lambda kind: self._count_consul_error("catalog", kind))
        if names is not None and self.watches.catalog is not None:
            self._on_catalog(names, time.monotonic())

    @property
    def client(self) -> consul.aio.Consul:
        """The one Consul client, made when the daemon runs (its connection pool lives on the loop)."""
        if self._client is None:
            raise RuntimeError("the Consul client exists only while the daemon runs")
        return self._client

    def _count_guard(self, service: str, outcome: str) -> None:
        self.metrics.guard.labels(service, outcome).inc()

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()
        self.stopping.set()

    def responsive(self, now: float, within: float) -> bool:
        """The loop is waiting for work, or has been at one step for less than ``within`` seconds: what
        the systemd watchdog is pinged on, so that a loop stuck in one step stops the pings."""
        return self.busy_since is None or now - self.busy_since < within

    def _still_progressing(self) -> None:
        """Called from the reload's thread while HAProxy's master is seen loading a slow config: the
        step is long but not stuck, so the watchdog's clock for it starts again."""
        if self.busy_since is not None:
            self.busy_since = time.monotonic()

    def request_cert_look(self, _: str = "") -> None:
        """The certificate directory changed (its file watch): look at it at the top of the next cycle."""
        if self.certs is not None:
            self.certs.look_soon()
            self._wake.set()

    def request_reload(self, reason: str = "SIGHUP") -> None:
        self._hup = True
        self._reread_reason = reason
        self._wake.set()

    # --- the loop ---

    async def run(self) -> int:
        """The loop, until stopped; ``wiring.serve`` runs it with signals, metrics and the watchdog."""
        self.template = load_template(self.settings.template_path())
        check_template(self.settings, self.template, self.applier.features(self.settings))
        for stale in haproxy.remove_stale_temp_files(*haproxy.owned_files(self.settings.haproxy)):
            log.info("removed %s, left by a writer that was killed mid-write", stale)
        if self.certs is not None:  # the store must hold a certificate before any config naming it is written
            try:
                await self._sync_certs(at_start=True)
            except haproxy.HAProxyError as exc:
                raise DaemonError(str(exc)) from None
        self._client = make_client(self.settings.consul)
        token_check = asyncio.create_task(check_token(self._client, bool(self.settings.consul.token)),
                                          name="token-check")
        try:
            self._start_catalog()
            self._sync_watches()
            if self.settings.sync.ready_without_consul > 0:
                self._ready_without_consul_at = time.monotonic() + self.settings.sync.ready_without_consul
            log.info(
                "started services=%s consul=%s config=%s runtime_api=%s",
                ",".join(s.name for s in self.settings.services), self.settings.consul.address,
                self.settings.haproxy.config_path, "on" if self.settings.sync.runtime_api else "off",
                extra=logs.event("daemon.started", address=self.settings.consul.address,
                                 file=str(self.settings.haproxy.config_path)),
            )
            await self._loop()
        finally:
            token_check.cancel()
            self.notifier.notify("STOPPING=1")
            # Bounded, so that a stop is a stop: a write still owed after this is done by the next start.
            for step in (self.writer.flush(), self.watches.close(), self.client.close()):
                try:
                    await asyncio.wait_for(step, STOP_STEP_TIMEOUT)
                except TimeoutError:
                    log.warning("stopping: a step did not end within %gs, left behind", STOP_STEP_TIMEOUT)
        log.info("stopped", extra=logs.event("daemon.stopped"))
        return 0

    def _timers(self) -> list[float]:
        # READY without Consul is owed only until the first apply: once Consul answered, that deadline
        # would stay in the past and wake the loop at once, every cycle (a busy loop, seen in bench/).
        ready_without_consul = self._ready_without_consul_at if self.applied is None else None
        timers = [self._retry_at, *self.drains.deadlines(), self.hold_down.due_at, self._reconcile_at,
                  self.certs.due_at if self.certs is not None else None,
                  self.catalog_guard.due_at, *self.guard.deadlines(), ready_without_consul]
        return [t for t in timers if t is not None]

    async def _loop(self) -> None:
        waiting_logged = False
        while not self._stop:
            try:
                self.busy_since = None
                await self._sleep_until_woken()
                if self._stop:
                    break
                self.busy_since = time.monotonic()
                if self._hup:
                    self._hup = False
                    self._reread()
                if self.certs is not None and self.certs.due(time.monotonic()):
                    await self._sync_certs()
                missing = self._waiting_for()
                if not missing:
                    self._ready_without_consul_at = None  # Consul answered: READY comes with the first apply
                if missing:
                    if not waiting_logged:
                        log.info("waiting for a first good read from Consul of services=%s",
                                 ",".join(sorted(missing)[:20]), extra=logs.event("daemon.waiting_for_consul"))
                        waiting_logged = True
                    await self._ready_without_consul(missing)
                    continue
                now = time.monotonic()
                due = self.guard.due(now)
                if due:
                    await self._reread_guarded(due)
                if self.catalog_guard.due_at is not None and self.catalog_guard.due_at <= now:
                    await self._reread_catalog()
                if self._reconcile_at is not None and now >= self._reconcile_at and not self._changed:
                    await self._reconcile()
                    continue
                if self.drains.poll_due(now):
                    await asyncio.to_thread(self.drains.poll, self.tables or {}, time.monotonic())
                timer_due = self.drains.due(now) or any(
                    t <= now for t in (self._retry_at, self.hold_down.due_at) if t is not None)
                if not (self._changed or timer_due):
                    continue
                if self._changed and not (self.settings.sync.first_change_at_once and self.bursts.opens):
                    await self._settle()
                    if self._stop:
                        break
                self._changed = False
                self.bursts.taken()
                self._retry_at = None
                started = time.monotonic()
                outcome = await self._apply_once()
                self._after(outcome, time.monotonic() - started)
            except Exception as exc:  # last resort: one cycle's bug or unforeseen answer must not end the daemon
                # One error line with the type and message, counted (apply_failures, stage "unexpected"),
                # and the next cycle after the same backoff as a failed apply; the traceback at debug.
                self._after(Outcome(False, f"unexpected {type(exc).__name__} in this cycle: {str(exc)[:300]}",
                                    stage=FailureStage.UNEXPECTED))
                log.debug("traceback of the cycle that failed", exc_info=exc)

    async def _sync_certs(self, at_start: bool = False) -> None:
        """Bring HAProxy's certificates in step with the directory (:mod:`certstore`), on the loop between
        applies so that a reload never loads a store half written. A failure keeps what HAProxy serves
        and looks again sooner; at start, a store that cannot hold any certificate is fatal (raised)."""
        assert self.certs is not None
        settings = self.settings
        try:
            done = await asyncio.to_thread(self.certs.sync, settings, time.time(), self._haproxy_runs())
        except haproxy.HAProxyError as exc:
            self.metrics.tls_changes.labels("failed").inc()
            if at_start and not self.certs.entries:
                raise
            self.certs.due_at = time.monotonic() + min(settings.tls.check_interval, CERT_RETRY)
            log.error("certificates: %s; HAProxy keeps serving the ones it has, next look in %gs", exc,
                      min(settings.tls.check_interval, CERT_RETRY),
                      extra=logs.event("tls.failed", path=str(settings.tls.cert_dir), error=str(exc)[:500]))
            return
        if done.changed:
            self.metrics.tls_changes.labels("applied").inc()
            log.info("%s", done.sentence(), extra=logs.event(
                "tls.applied", path=str(settings.tls.store_dir), commands=done.added + done.replaced + done.removed))
        for cert in done.newly_expiring:
            days = (cert.not_after - time.time()) / 86400
            log.warning("certificate %s (%s) expires in %.1f days; renew it (tls.expiry_warning %gh)", cert.name,
                        ",".join(cert.names[:3]), days, settings.tls.expiry_warning / 3600,
                        extra=logs.event("tls.expiring", path=str(settings.tls.cert_dir / f"{cert.name}.pem")))

    def _haproxy_runs(self) -> bool:
        """Whether HAProxy's admin socket is there to be asked (else the store is what it will load)."""
        return self.settings.haproxy.stats_socket.exists()

    async def _ready_without_consul(self, missing: list[str]) -> None:
        """A start that cannot reach Consul, with HAProxy serving the last good config: READY to systemd
        rather than a start timeout and a restart loop that would not bring Consul back. Told once, when
        ``sync.ready_without_consul`` has passed and HAProxy's current worker is known to run the live
        config; /ready stays 503 (no Consul data) and the first apply follows when Consul answers."""
        due = self._ready_without_consul_at
        if self._ready_sent or due is None or time.monotonic() < due:
            return
        self._ready_without_consul_at = None
        settings = self.settings
        live = await asyncio.to_thread(self.applier.read_live, settings)
        serving = live is not None and await asyncio.to_thread(self.applier.inherit, settings, live) is not None
        if not serving:
            log.warning("no answer from Consul for %s after %gs and HAProxy is not known to run the live config "
                        "%s: not ready until the first apply", ",".join(sorted(missing)[:20]),
                        settings.sync.ready_without_consul, settings.haproxy.config_path,
                        extra=logs.event("daemon.not_ready", setting="sync.ready_without_consul"))
            return
        log.warning("no answer from Consul for %s after %gs: ready (to systemd) with HAProxy serving the last "
                    "good config %s; /ready answers 503 until Consul answers and the first apply is done",
                    ",".join(sorted(missing)[:20]), settings.sync.ready_without_consul, settings.haproxy.config_path,
                    extra=logs.event("daemon.ready_without_consul", setting="sync.ready_without_consul",
                                     file=str(settings.haproxy.config_path)))
        self.notifier.notify("READY=1")
        self._ready_sent = True
        status = f"STATUS=waiting for Consul; HAProxy serves the last good config {settings.haproxy.config_path}"
        self.notifier.notify(status[:200])

    def _waiting_for(self) -> list[str]:
        """What the first apply still waits for: every configured service, the catalog, and a first
        answer (or a first failure: one bad service must not hold up the rest) of each discovered one."""
        missing = [s.name for s in self.settings.services if s.name not in self.latest]
        if self.applied is not None:
            return missing
        catalog = self.watches.catalog
        if catalog is not None and not catalog.status.first_read.is_set():
            missing.append("(catalog of tagged services)")
        # Called on every wake-up of a cold start: no sort of a thousand names each time.
        for name in self.discovered - self.latest.keys():
            watch = self.watches.get(name)
            if watch is not None and watch.status.failures == 0:
                missing.append(name)
        return missing

    async def _sleep_until_woken(self) -> None:
        timers = self._timers()
        timeout = max(0.0, min(timers) - time.monotonic()) if timers else None
        await self._woken_within(timeout)
        self._wake.clear()

    async def _woken_within(self, seconds: float | None) -> bool:
        """Wait for a wake-up, at most ``seconds``; whether one came. ``asyncio.timeout`` rather
        than ``wait_for``, which on 3.11 starts a task per wait: a loop turn more on every change."""
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    async def _settle(self) -> None:
        """Quiescence: wait until no change came for ``wait_min``, but never longer than ``wait_max``."""
        wait_min, wait_max = self.settings.sync.wait_min, self.settings.sync.wait_max
        deadline = time.monotonic() + wait_max
        while not self._stop:
            timeout = min(wait_min, deadline - time.monotonic())
            if timeout <= 0:
                return
            self._wake.clear()
            if not await self._woken_within(timeout):
                return

    async def _apply_once(self, isolating: bool = True) -> Outcome:
        """One apply cycle. When HAProxy (or the template) refuses the candidate, the instances that
        cause it are found and left out, and the cycle runs once more without them (``isolating``)."""
        settings = self.settings
        observed = self._observe(settings)
        routing = observed.routing
        self._note_routing(routing)
        snapshot = self.hold_down.judge(self.applied, observed.snapshot, time.monotonic(), settings.sync.hold_down)
        snapshot = self._guard(snapshot, routing)
        diffs = diff_snapshots(self.applied, snapshot)
        change = describe(diffs)
        self._change_fields = change_fields(diffs)
        if self.guard.held:
            change += f"; {','.join(self.guard.held)} held by the guard"
        if self.hold_down.held:
            change += f"; {self.hold_down.held} status changes held by hold_down"
        live = self._running_text if self._confirmed else self.applier.read_live(settings)
        if self.tables is None and live is not None:
            live = await self._adoptable(live, routing)
        # On the loop, as state_view does: a stat of the binary once `haproxy -v` was read; a worker
        # thread's hop would cost more than that on every apply (bench/churn's convergence).
        features = self.applier.features(settings)
        assert self.template is not None
        try:
            prepared = prepare(settings, self.template, features, routing, snapshot, self.tables, live,
                               self.drains.take_idle(), evicted=self.rejections.evicted(routing.backends),
                               rebind_socket=self._rebind_socket)
        except TemplateError as exc:
            self.drains.stop()  # the retry after the backoff plans drains again
            failed = Outcome(False, f"{change}; template error {exc}; kept last good config",
                             stage=FailureStage.TEMPLATE)
            return await self._isolated(failed, routing, snapshot, live, features) if isolating else failed
        tables = prepared.tables
        can_poll = bool(draining(tables)) and await asyncio.to_thread(self.drains.supported)
        self.drains.planned(tables, settings.sync.drain_timeout, time.monotonic(), can_poll)
        self.metrics.renders.inc()
        baseline = self.runs.baseline if self.runs else await self._inherited(live, snapshot, routing)
        decision = decide(settings, baseline, prepared, self._structure_changed)
        if decision.path is ApplyPath.NONE:
            self._commit(prepared)
            return Outcome(True, f"{change}; rendered config identical, no write, no reload")
        reason = decision.reload_reason
        socket_failed = False
        if decision.path is ApplyPath.RUNTIME:
            try:
                action = await asyncio.to_thread(self.applier.runtime, settings, tables, decision.commands, routing)
            except haproxy.HAProxyError as exc:
                self.metrics.apply_failures.labels(FailureStage.RUNTIME.label).inc()
                socket_failed = isinstance(exc, haproxy.SocketError)
                log.warning("runtime API path failed: %s; applying by a reload instead%s", exc,
                            " (without waiting on the admin socket again)" if socket_failed else "",
                            extra=logs.event("apply.runtime_failed", **self._change_fields, path="runtime",
                                             commands=len(decision.commands), error=str(exc)[:500]))
                reason = ReloadReason(ReloadKind.RUNTIME_FAILED, f"runtime API path failed ({exc})")
            else:
                self._commit(prepared)
                self.writer.submit(Files(prepared.text, prepared.routes))
                return Outcome(True, f"{change}; {action}", path=ApplyPath.RUNTIME, commands=len(decision.commands))
        await self.writer.flush()  # the reload path writes the file itself, after any pending write
        wait = self._reload_not_before - time.monotonic()
        assert reason is not None
        if wait > 0:
            self._retry_at = self._reload_not_before
            return Outcome(True, f"{change}; reload ({reason}) deferred {wait:.1f}s by the reload budget",
                           deferred=True)
        outcome = await self._reload(prepared, change, reason, admin_socket=not socket_failed)
        if outcome.stage is FailureStage.VALIDATION and isolating:
            return await self._isolated(outcome, routing, prepared.snapshot, live, features)
        return outcome

    async def _isolated(self, failed: Outcome, routing: Routing, snapshot: Snapshot, live: str | None,
                        features: haproxy.Features) -> Outcome:
        """After ``failed``: the cycle again without the instances that caused it, or ``failed`` itself
        when no instance is to blame (a template or settings change: the last good config stays)."""
        if not await self._isolate(routing, snapshot, live, features):
            return failed
        self._record(failed)
        log.warning("apply failed: %s; applying again without the instances HAProxy refused", failed.sentence)
        return await self._apply_once(isolating=False)

    async def _isolate(self, routing: Routing, snapshot: Snapshot, live: str | None,
                       features: haproxy.Features) -> bool:
        """Find the instances that make the candidate fail and leave them out; True when any were found."""
        settings, template = self.settings, self.template
        assert template is not None
        check = functools.partial(self.applier.check, settings, template, features)
        found = await asyncio.to_thread(isolate_refusal, settings, template, features, routing, self.applied,
                                        snapshot, check, self.tables, live, self._still_progressing,
                                        self.rejections.evicted(routing.backends))
        for line in isolate.sentences(found):
            log.warning("%s", line)
        if not found.rejected:
            return False
        self.rejections = self.rejections.with_found(found.found)
        self.metrics.instances_rejected.inc(len(found.rejected))
        return True

    async def _inherited(self, live: str | None, snapshot: Snapshot, routing: Routing) -> Baseline | None:
        """At the first apply, the live config as the starting point when HAProxy's current worker is
        known to run it (a restart of the daemon): the plan is then Runtime API commands, not a reload."""
        if live is None or self._structure_changed:
            return None
        routes = await asyncio.to_thread(self.applier.inherit, self.settings, live)
        if routes is None:
            return None
        log.info("HAProxy already runs the live config %s: starting from it, no reload",
                 self.settings.haproxy.config_path,
                 extra=logs.event("daemon.inherited", file=str(self.settings.haproxy.config_path)))
        return Baseline(slots_from_config(live, snapshot, routing.backends), routes, live)

    async def _adoptable(self, live: str, routing: Routing) -> str | None:
        """The live config to take slots over from at the first apply, or None to lay them out anew."""
        try:
            running = await asyncio.to_thread(self.applier.running, self.settings)
        except haproxy.HAProxyError:
            running = None  # HAProxy not answering: the file alone is checked
        return adoptable(self.settings, live, routing, running)

    def _note_routing(self, routing: Routing) -> None:
        """Log each change of the unrouted services once, and keep the routing gauges current."""
        if routing.unrouted != self._unrouted:
            before = set(self._unrouted)
            for item in routing.unrouted:
                if item not in before:
                    log.warning("discovery: service %s is not routed: %s", item.service, item.reason)
            self._unrouted = routing.unrouted
        discovered = sum(1 for s in routing.services if s.discovered)
        self.metrics.routed.labels("configured").set(len(routing.services) - discovered)
        self.metrics.routed.labels("discovered").set(discovered)
        self.metrics.unrouted.set(len(routing.unrouted))

    def _guard(self, snapshot: Snapshot, routing: Routing) -> Snapshot:
        """Hold a service whose healthy servers would drop too far at once, until a re-read confirms it."""
        return self.guard.judge(self.applied, snapshot, routing.services, time.monotonic(),
                                self.settings.sync.guard_delay)

    async def _reread_guarded(self, names: list[str]) -> None:
        """The service guard's second look (``second_look``): what it reads is taken like a watch's answer."""
        queries = {name: watch.query for name in names if (watch := self.watches.get(name)) is not None}
        fresh = await reread_held(self.client, names, queries, self.settings.address_policy, self.guard,
                                  self.settings.sync.guard_delay)
        self.latest.update(fresh)
        self._changed = self._changed or bool(fresh)

    async def _reload(self, prepared: Prepared, change: str, reason: ReloadReason,
                      admin_socket: bool = True) -> Outcome:
        """The reload path; ``admin_socket`` false: it just failed, so neither the reload nor the read-back
        after it waits on it (the new worker starts from the config; the reconcile reads back later)."""
        settings = self.settings
        try:
            report = await asyncio.to_thread(self.applier.reload, settings, prepared.text, prepared.tables,
                                             prepared.routes, self._still_progressing, admin_socket)
        except haproxy.ValidationError as exc:
            if exc.details:
                log.debug("haproxy -c output: %s", exc.details.replace("\n", " | "))
            return Outcome(False, f"{change}; {exc}; kept last good config", stage=FailureStage.VALIDATION)
        except haproxy.HAProxyError as exc:
            self._doubt()
            if isinstance(exc, master.ReloadError):
                self.metrics.reload_failures.labels(exc.failure.label).inc()
                self.metrics.reloaded(ok=False)
                # The reload budget holds after a failed reload too: with the failures' backoff it keeps
                # a config HAProxy is slow to load, or refuses, from being reloaded over and over.
                self._reload_not_before = time.monotonic() + settings.sync.reload_min_interval
            return Outcome(False, f"{change}; {exc}", stage=FailureStage.RELOAD, failure=getattr(exc, "failure", None))
        action = report.sentence()
        if prepared.rebind_socket and report.reloaded:
            self._rebind_socket = False
            self._changed = True  # and back to its usual spelling at the next reload the budget allows
            back = settings.haproxy.stats_socket.exists()
            log.log(logging.INFO if back else logging.WARNING, "HAProxy's admin socket %s %s after the reload",
                    settings.haproxy.stats_socket, "is back" if back else "is still missing: the reconcile tries again")
        if report.reloaded:
            self.metrics.reloaded(ok=True)
            self.drains.forget_version()
            self._reload_not_before = time.monotonic() + settings.sync.reload_min_interval
            action = f"{action} ({reason})"
        self._structure_changed = False
        self._commit(prepared)
        self.writer.wrote(Files(prepared.text, prepared.routes))
        if admin_socket:
            await asyncio.to_thread(read_back_after_reload, settings, self.applier, prepared.tables,
                                    prepared.routing, self.metrics)
        path = ApplyPath.RELOAD if report.reloaded else ApplyPath.NONE
        return Outcome(True, f"{change}; {action}", path=path, reason=reason.kind, reload=report)

    def _observe(self, settings: Settings) -> Observed:
        """What the watches delivered (less the instances HAProxy refused), routed with the routes HAProxy
        runs and those reserved."""
        routed = self.routing.map_entries if self.routing is not None else None
        latest, self.rejections = self.rejections.narrow(self.latest)
        return observe(settings, latest, self.discovered, self.routing, holders=self.routes.holders(routed),
                       reserved=self.routes.reserved(time.monotonic(), settings.discovery.route_grace))

    # --- what HAProxy runs: one record, replaced whole by each good apply ---

    @property
    def applied(self) -> Snapshot | None:
        return self.runs.snapshot if self.runs is not None else None

    @property
    def tables(self) -> dict[str, BackendSlots] | None:
        return self.runs.tables if self.runs is not None else None

    @property
    def routing(self) -> Routing | None:
        return self.runs.routing if self.runs is not None else None

    @property
    def _running_text(self) -> str | None:
        return self.runs.text if self.runs is not None else None

    @property
    def _confirmed(self) -> bool:
        """HAProxy is known to run :attr:`runs` (the live file once written)."""
        return self.runs is not None and self.runs.confirmed

    def _doubt(self) -> None:
        """A failure left it unknown whether HAProxy runs :attr:`runs`: the next apply reloads."""
        if self.runs is not None:
            self.runs = dataclasses.replace(self.runs, confirmed=False)

    def _commit(self, prepared: Prepared) -> None:
        self.routes.routed(self.routing.map_entries if self.routing is not None else None,
                           prepared.routing.map_entries, time.monotonic())
        self.runs = RunningState(prepared.snapshot, prepared.tables, prepared.routing, prepared.text)
        self._schedule_reconcile()

    def _persist(self, files: Files) -> None:
        """The background write: the config HAProxy runs and the routes map that goes with it."""
        self.applier.persist(self.settings, files.config, files.routes)

    def _persist_failed(self, exc: Exception, failed: int) -> float | None:
        """A background write failed: retry it (a disk fault), or reload (a text HAProxy refuses)."""
        delay = backoff_delay(failed, self.settings.consul.backoff_max)
        if not isinstance(exc, haproxy.ValidationError):
            self.metrics.write_failures.inc()
            log.error("HAProxy runs the new servers but writing them to disk failed: %s; Runtime API changes go "
                      "on, the write is retried in %.1fs (a restart before then loads the older file)", exc, delay,
                      extra=logs.event("persist.failed", file=str(self.settings.haproxy.config_path),
                                       delay_s=round(delay, 1), error=str(exc)[:500]))
            return delay
        self.metrics.apply_failures.labels(FailureStage.PERSIST.label).inc()
        self._failures += 1
        log.error("HAProxy runs the new servers but haproxy -c refuses them on disk: %s; reloading, which "
                  "finds the instance to blame", exc,
                  extra=logs.event("persist.refused", stage=FailureStage.PERSIST.label, error=str(exc)[:500]))
        self._doubt()
        self._retry_at = time.monotonic()
        self._wake.set()
        return None

    def _schedule_reconcile(self) -> None:
        interval = self.settings.sync.reconcile_interval
        self._reconcile_at = time.monotonic() + interval if interval > 0 else None

    async def _reconcile(self) -> None:
        """Read back what HAProxy runs and repair drift (``reconcile``); a reload when only one can."""
        self._schedule_reconcile()
        if not self._confirmed or self.tables is None or self.routing is None:
            return
        finding = await asyncio.to_thread(reconcile, self.settings, self.applier, self.tables, self.routing,
                                          self.metrics, self._rebind_socket)
        if finding is Finding.SOCKET_GONE and not self._rebind_socket:
            self._rebind_socket = self._changed = True
        elif finding is Finding.SERVERS_MISSING:
            self._doubt()
            self._changed = True

    def _after(self, outcome: Outcome, seconds: float | None = None) -> None:
        if outcome.deferred:
            log.debug("%s", outcome.sentence, extra=logs.event("apply.deferred", **self._change_fields))
            return
        self._record(outcome)
        repeated = self._no_master and outcome.failure is ReloadFailure.NO_MASTER  # one error line per episode
        self._no_master = outcome.failure is ReloadFailure.NO_MASTER
        fields = {**self._change_fields, "path": outcome.path.label,
                  "reason": outcome.reason.label if outcome.reason else None,
                  "commands": outcome.commands or None,
                  "worker": outcome.reload.worker if outcome.reload else None,
                  "duration_ms": round(seconds * 1000, 1) if seconds is not None else None}
        if outcome.ok:
            self._failures = 0
            log.info("applied %s", outcome.sentence, extra=logs.event("apply.done", **fields))
            if not self._ready_sent:
                self.notifier.notify("READY=1")
                self._ready_sent = True
            self.notifier.notify(f"STATUS={outcome.sentence[:200]}")
            return
        self._failures += 1
        delay = backoff_delay(self._failures, self.settings.consul.backoff_max)
        self._retry_at = time.monotonic() + delay
        stage = (outcome.stage or FailureStage.UNEXPECTED).label
        log.log(logging.DEBUG if repeated else logging.ERROR, "apply failed: %s; retrying in %.1fs", outcome.sentence,
                delay, extra=logs.event("apply.failed", **fields, stage=stage, delay_s=round(delay, 1),
                                        kind=outcome.failure.label if outcome.failure else None))

    def _record(self, outcome: Outcome) -> None:
        """Metrics and the state /status shows, for one finished apply cycle."""
        metrics = self.metrics
        if not outcome.ok:
            stage = outcome.stage or FailureStage.UNEXPECTED
            metrics.apply_failures.labels(stage.label).inc()
            if stage is FailureStage.VALIDATION:
                metrics.validation_failures.inc()
            elif stage is FailureStage.TEMPLATE:
                metrics.template_errors.inc()
            return
        reason = outcome.reason.label if outcome.reason is not None else outcome.path.label
        metrics.applies.labels(outcome.path.label, reason).inc()
        metrics.last_apply.set(time.time())
        metrics.runtime_commands.inc(outcome.commands)
        if outcome.reload is not None and outcome.reload.reloaded:
            metrics.reload_duration.observe(outcome.reload.seconds)
            metrics.old_workers.set(outcome.reload.old_workers)
        if self._first_unapplied is not None and outcome.path is not ApplyPath.NONE:
            metrics.convergence.labels(outcome.path.label).observe(time.monotonic() - self._first_unapplied)
        if not self.guard.held:  # a change the guard holds is still waiting: keep its start time
            self._first_unapplied = None
        self._last_apply = (outcome.sentence, outcome.path.label, time.monotonic())

    def state_view(self) -> StateView:
        """What /metrics, /ready and /status show; called on the loop at request time."""
        now = time.monotonic()
        every: list[tuple[str, ServiceWatch | CatalogWatch]] = list(self.watches.services())
        if self.watches.catalog is not None:
            every.insert(0, ("catalog", self.watches.catalog))
        watches = [
            WatchView(name, w.status.healthy, w.status.fault, w.status.last_index, w.status.data_age(now))
            for name, w in every
        ]
        skipped: Counter[tuple[str, str]] = Counter(  # instances; the catalog's skips are services, logged
            (name, item.kind.label) for name, w in self.watches.services() for item in w.skipped
        )
        skipped.update({(name, SkipKind.REJECTED.label): n for name, n in self.rejections.counts().items()})
        servers = servers_by_state(self.tables or {})
        sentence, path, at = self._last_apply
        return StateView(
            watches=watches, servers=servers, skipped=dict(skipped), applied_once=self.applied is not None,
            confirmed=self._confirmed, reload_owed=self._structure_changed, rejected_config=self._rejected_config,
            last_apply=sentence, last_apply_path=path, last_apply_age=None if at is None else now - at,
            stale_after=self.settings.metrics.stale_after,
            haproxy_version=self.applier.features(self.settings).version_text,
            canary_shares=self._canary_shares(),
            certificates={c.name: (c.not_after, ",".join(c.names)) for c in self.certs.entries.values()}
            if self.certs is not None else {},
            certificates_refused=len(self.certs.refused) if self.certs is not None else 0,
            certificates_expiring=len(self.certs.expiring) if self.certs is not None else 0,
        )

    def _canary_shares(self) -> dict[str, float]:
        """Per backend with a canary policy, the share its planned weights give the canaries."""
        if self.runs is None:
            return {}
        routing = self.runs.routing
        return shares_in_force(routing.canaries, {s.backend: self.runs.snapshot.get(s.name) for s in routing.services})

    # --- configuration changes ---

    def _reread(self) -> None:
        """SIGHUP or an edited file: new settings and template, or a clear error and the old ones kept."""
        if self.reload_settings is None:
            return
        why, self._reread_reason = self._reread_reason, "SIGHUP"
        try:
            settings = self.reload_settings()
            template = load_template(settings.template_path())
            # A template that loads can still fail on real data: try it before trusting it.
            observed = self._observe(settings)
            features = self.applier.features(settings)
            prepared = prepare(settings, template, features, observed.routing, observed.snapshot, self.tables)
            check_template(settings, template, features)
        except (ConfigError, TemplateError) as exc:
            problem = str(exc).replace("\n", "; ")
            log.error("%s: new configuration rejected, keeping the running one: %s", why, problem,
                      extra=logs.event("config.rejected", reason=why, error=problem[:500]))
            self.metrics.config_rereads.labels("rejected").inc()
            self._rejected_config = problem
            return
        self.metrics.config_rereads.labels("applied").inc()
        self._rejected_config = ""
        if settings.log != self.settings.log:
            logs.configure(settings.log.level, settings.log.format)
            log.info("%s: logging now level=%s format=%s", why, settings.log.level, settings.log.format)
        if settings.consul != self.settings.consul:
            log.warning("%s: [consul] changes take effect on restart; other changes applied now", why)
            settings = dataclasses.replace(settings, consul=self.settings.consul)
        discovery_changed = settings.discovery != self.settings.discovery
        if settings.tls.enabled and self.certs is None:
            self.certs = CertSync()  # looks at once, before the apply that renders the HTTPS bind
        elif not settings.tls.enabled:
            self.certs = None
        elif settings.tls != self.settings.tls:
            self.certs.look_soon()
        weights_only = self._weights_only(settings, features, prepared)
        self.settings, self.template = settings, template
        self.rejections = self.rejections.cleared()  # what HAProxy refused may pass with the new ones
        if discovery_changed:
            self._start_catalog()
        self._sync_watches()
        self._structure_changed = self._structure_changed or not weights_only
        self._changed = True
        log.info("%s: configuration and template re-read%s", why,
                 "; only canary shares changed: weights, no reload" if weights_only else "",
                 extra=logs.event("config.reread", reason=why))

    def _weights_only(self, settings: Settings, features: haproxy.Features, prepared: Prepared) -> bool:
        """Whether the re-read ``settings`` and template change only canary shares: the old template
        renders the new settings' tables byte for byte as the new one does, and no other setting moved."""
        if self.template is None or not only_shares_differ(self.settings, settings):
            return False
        try:
            before = render(prepared.tables, settings, self.template, prepared.routing, features,
                            prepared.rebind_socket)
        except TemplateError:
            return False
        return before == prepared.text

    def _start_catalog(self) -> None:
        """(Re)start the watch of tagged services, or stop it when discovery is off."""
        self.catalog_guard.reset()
        self.watches.start_catalog(self.settings.discovery, self.settings.consul)
        if not self.settings.discovery.enabled:
            self.discovered = frozenset()

    def _sync_watches(self) -> None:
        """One health watch per routed service; what a stopped watch knew goes with it."""
        stopped = self.watches.sync(service_queries(self.settings, self.discovered), self.settings.address_policy,
                                    self.settings.consul)
        for name in stopped.names:
            self.latest.pop(name, None)
            self.guard.forget(name)  # a service no longer watched has nothing to re-read
        for name in stopped.gone:
            if not (name == "catalog" and self.watches.catalog is not None):
                # Gone, not restarted: its series go too, or names cycling through Consul would
                # pile up series without bound ("catalog" is also the discovery watch's label).
                self.metrics.forget_service(name)
        for name, _ in self.watches.services():
            self.metrics.watching(name)  # idempotent: a sample of 0 for each guard outcome
        if self.watches.catalog is not None:
            self.metrics.watching("catalog")

    def _count_consul_error(self, service: str, kind: str) -> None:
        self.metrics.consul_errors.labels(service, kind).inc()
