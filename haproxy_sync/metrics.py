"""Prometheus metrics, ``/health``, ``/ready`` and ``/status`` on one small HTTP server in the daemon's loop.

Counters and histograms are updated where things happen (the daemon calls :class:`Metrics` methods);
values that are a view of current state (watch health, data age, servers by state) are read at scrape
time from the daemon through :class:`StateView`, so they can never go stale between events.

``/health`` answers 200 while the event loop runs. ``/ready`` answers 200 only when the first apply is
done, HAProxy is confirmed running the current config, and every watch's Consul data is fresher than
``stale_after``; otherwise 503 with the reasons. ``/status`` is the JSON ``haproxy-sync status`` reads.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from haproxy_sync import __version__
from haproxy_sync.buildinfo import revision
from haproxy_sync.reasons import ApplyPath, FailureStage, ReloadFailure, ReloadKind

log = logging.getLogger(__name__)

#: The outcomes of the empty-backend guard (``guard_total{outcome}``), see guard.Count.
GUARD_OUTCOMES = ("held", "applied", "recovered")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class WatchView:
    service: str
    healthy: bool
    fault: str
    last_index: int
    age: float | None  # seconds since the last good answer; None before the first


@dataclass
class StateView:
    """What the daemon knows right now, for scrapes, /ready and /status."""

    watches: list[WatchView] = field(default_factory=list)
    servers: dict[tuple[str, str], int] = field(default_factory=dict)  # (backend, state) -> count
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)  # (service, reason kind) -> count, > 0
    applied_once: bool = False
    confirmed: bool = False
    reload_owed: bool = False  # the template or settings were re-read: the next apply reloads
    rejected_config: str = ""  # why the last re-read of the settings was refused (until one is taken)
    last_apply: str = ""
    last_apply_path: str = ""
    last_apply_age: float | None = None
    stale_after: float = 180.0
    haproxy_version: str = "unknown"  # of the configured binary, asked again when the file changes
    canary_shares: dict[str, float] = field(default_factory=dict)  # backend -> canaries' share by weights
    certificates: dict[str, tuple[float, str]] = field(default_factory=dict)  # store entry -> (not_after, names)
    certificates_refused: int = 0
    certificates_expiring: int = 0

    def not_ready(self) -> list[str]:
        reasons = []
        if not self.applied_once:
            reasons.append("no config applied yet")
        elif not self.confirmed:
            reasons.append("HAProxy not confirmed running the current config")
        if self.rejected_config:
            reasons.append(f"the last re-read of the configuration was rejected, the previous one runs: "
                           f"{self.rejected_config[:300]}")
        for watch in self.watches:
            if watch.age is None:
                reasons.append(f"no good read of {watch.service} from Consul yet")
            elif watch.age > self.stale_after:
                reasons.append(f"Consul data for {watch.service} is {watch.age:.0f}s old (stale_after "
                               f"{self.stale_after:g}s, fault={watch.fault or 'none'})")
        return reasons


class Metrics:
    """Every haproxy-sync series, in a registry of its own (no global state)."""

    def __init__(self, view: Callable[[], StateView]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.view = view
        reg = self.registry
        # The process and Python collectors of prometheus_client, in this registry rather than the global one.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            reg.register(collector)
        self.consul_errors = Counter(
            "haproxy_sync_consul_errors_total", "Failed Consul reads by fault kind.", ["service", "kind"], registry=reg)
        self.renders = Counter("haproxy_sync_renders_total", "Templates rendered.", registry=reg)
        self.template_errors = Counter(
            "haproxy_sync_template_errors_total", "Renders that failed in the template.", registry=reg)
        self.validation_failures = Counter(
            "haproxy_sync_validation_failures_total", "Rendered configs rejected by haproxy -c.", registry=reg)
        self.write_failures = Counter(
            "haproxy_sync_config_write_failures_total",
            "Background writes of haproxy.cfg that failed on the disk (retried; HAProxy already runs the text).",
            registry=reg)
        self.instances_rejected = Counter(
            "haproxy_sync_instances_rejected_total",
            "Instances left out because HAProxy (or the template) refused the config holding them.", registry=reg)
        self.applies = Counter(
            "haproxy_sync_applies_total", "Applies by path (runtime, reload, none) and reason.", ["path", "reason"],
            registry=reg)
        self.apply_failures = Counter(
            "haproxy_sync_apply_failures_total", "Applies that failed, by stage.", ["stage"], registry=reg)
        self.reload_failures = Counter(
            "haproxy_sync_reload_failures_total", "Reloads HAProxy did not confirm, by kind (rejected, fd_limit, "
            "still_loading, master_gone, not_started, no_master, command).", ["kind"], registry=reg)
        self.runtime_commands = Counter(
            "haproxy_sync_runtime_commands_total", "Runtime API commands sent.", registry=reg)
        self.reload_duration = Histogram(
            "haproxy_sync_reload_duration_seconds", "Reload until HAProxy confirmed a new worker.",
            buckets=LATENCY_BUCKETS, registry=reg)
        self.convergence = Histogram(
            "haproxy_sync_convergence_seconds", "Consul change seen until HAProxy confirmed running it.",
            ["path"], buckets=LATENCY_BUCKETS, registry=reg)
        self.drift_found = Counter(
            "haproxy_sync_drift_found_total", "Servers found running other than planned.", registry=reg)
        self.drift_repaired = Counter(
            "haproxy_sync_drift_repaired_total", "Runtime commands sent to repair drift.", registry=reg)
        self.guard = Counter(
            "haproxy_sync_guard_total", "Empty-backend guard: big drops held, then applied or recovered.",
            ["service", "outcome"], registry=reg)
        self.routed = Gauge(
            "haproxy_sync_services_routed", "Services with a backend, by origin (configured, discovered).",
            ["origin"], registry=reg)
        self.unrouted = Gauge(
            "haproxy_sync_services_unrouted", "Tagged services left unrouted (bad or missing meta, conflicts).",
            registry=reg)
        self.config_rereads = Counter(
            "haproxy_sync_config_rereads_total", "Re-reads of the settings and template (SIGHUP, an edited file), "
            "by result (applied, rejected).", ["result"], registry=reg)
        self.tls_changes = Counter(
            "haproxy_sync_tls_changes_total", "Looks at the certificate directory that changed HAProxy's "
            "certificates (applied) or failed to (failed).", ["result"], registry=reg)
        self.old_workers = Gauge(
            "haproxy_sync_haproxy_old_workers", "HAProxy workers of older generations still alive.", registry=reg)
        self.last_reload_ok = Gauge(
            "haproxy_sync_config_last_reload_successful",
            "1 unless the last HAProxy reload haproxy-sync asked for failed (1 before the first).", registry=reg)
        self.last_reload_ok.set(1)
        self.last_reload_success = Gauge(
            "haproxy_sync_config_last_reload_success_timestamp_seconds",
            "Unix time of the last reload HAProxy confirmed (0: none since this daemon started).", registry=reg)
        self.last_apply = Gauge(
            "haproxy_sync_last_apply_timestamp_seconds",
            "Unix time of the last successful apply, a no-op included (0: none yet).", registry=reg)
        self._initialise()
        #: The labelled metrics with a ``service`` label kept in this registry (the scrape-time series
        #: of _StateCollector follow the watches by themselves); a new one must be listed here.
        self.per_service: tuple[tuple[Counter | Gauge | Histogram, tuple[str, ...]], ...] = (
            (self.consul_errors, ("service", "kind")), (self.guard, ("service", "outcome")))
        reg.register(_StateCollector(view))

    def _initialise(self) -> None:
        """A sample of 0 for every label value known in advance, so that ``increase()`` sees the first one.

        Per-service counters are initialised by :meth:`watching` when the service's watch starts.
        """
        for stage in FailureStage:
            self.apply_failures.labels(stage.label)
        for failure in ReloadFailure:
            self.reload_failures.labels(failure.label)
        for result in ("applied", "rejected"):
            self.config_rereads.labels(result)
        for result in ("applied", "failed"):
            self.tls_changes.labels(result)
        self.applies.labels(ApplyPath.RUNTIME.label, ApplyPath.RUNTIME.label)
        self.applies.labels(ApplyPath.NONE.label, ApplyPath.NONE.label)
        for kind in ReloadKind:
            self.applies.labels(ApplyPath.RELOAD.label, kind.label)
            self.applies.labels(ApplyPath.NONE.label, kind.label)  # a reload found HAProxy already running it
        for path in ApplyPath:
            self.convergence.labels(path.label)
        for origin in ("configured", "discovered"):
            self.routed.labels(origin)

    def watching(self, service: str) -> None:
        """A watch of ``service`` started: its guard outcomes start at 0 (3 series per service; the
        Consul error kinds are left to appear at the first error, 13 per service would be too many)."""
        for outcome in GUARD_OUTCOMES:
            self.guard.labels(service, outcome)

    def reloaded(self, ok: bool) -> None:
        """A reload haproxy-sync asked for ended: confirmed (``ok``) or not."""
        self.last_reload_ok.set(1 if ok else 0)
        if ok:
            self.last_reload_success.set(time.time())

    def forget_service(self, service: str) -> None:
        """Remove every series of ``service`` (a discovered service that left, its watch stopped), so
        that service names coming and going in Consul cannot grow the exposition without bound."""
        for metric, names in self.per_service:
            children = {tuple(sample.labels[n] for n in names) for family in metric.collect()
                        for sample in family.samples if sample.labels.get("service") == service}
            for values in children:
                metric.remove(*values)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Series computed from the daemon's state at scrape time."""

    def __init__(self, view: Callable[[], StateView]) -> None:
        self.view = view

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = self.view()
        up = GaugeMetricFamily("haproxy_sync_consul_watch_up", "1 while the watch's reads succeed.",
                               labels=["service"])
        index = GaugeMetricFamily("haproxy_sync_consul_last_index", "Last X-Consul-Index seen.", labels=["service"])
        age = GaugeMetricFamily("haproxy_sync_consul_data_age_seconds",
                                "Seconds since the last good answer from Consul.", labels=["service"])
        for watch in state.watches:
            up.add_metric([watch.service], 1.0 if watch.healthy else 0.0)
            index.add_metric([watch.service], float(watch.last_index))
            if watch.age is not None:
                age.add_metric([watch.service], watch.age)
        servers = GaugeMetricFamily("haproxy_sync_servers", "Server slots by backend and planned state.",
                                    labels=["backend", "state"])
        for (backend, slot_state), count in sorted(state.servers.items()):
            servers.add_metric([backend, slot_state], float(count))
        # Only services with something skipped have a series: 1,000 services x 6 reasons of zeros
        # would cost memory and cardinality, and a removed service's series goes with it.
        skipped = GaugeMetricFamily("haproxy_sync_instances_skipped",
                                    "Consul instances left out of the config now, by reason (absent: none).",
                                    labels=["service", "reason"])
        for (service, kind), count in sorted(state.skipped.items()):
            skipped.add_metric([service, kind], float(count))
        build = GaugeMetricFamily("haproxy_sync_build_info", "haproxy-sync's version and revision, and the "
                                  "version of the HAProxy binary it runs.",
                                  labels=["version", "revision", "haproxy_version"])
        build.add_metric([__version__, revision(), state.haproxy_version], 1.0)
        ready = GaugeMetricFamily("haproxy_sync_ready", "1 when /ready answers 200.")
        ready.add_metric([], 0.0 if state.not_ready() else 1.0)
        canary = GaugeMetricFamily("haproxy_sync_canary_share",
                                   "Share of requests the weights give the backend's canaries now (backends "
                                   "with a canary_tag only).", labels=["backend"])
        for backend, share in sorted(state.canary_shares.items()):
            canary.add_metric([backend], share)
        yield from (build, up, index, age, servers, skipped, ready, canary)
        if not state.certificates:
            return
        expiry = GaugeMetricFamily("haproxy_sync_tls_certificate_expiry_timestamp_seconds",
                                   "When each certificate HAProxy serves expires (POSIX seconds).", labels=["name"])
        for name, (not_after, _) in sorted(state.certificates.items()):
            expiry.add_metric([name], not_after)
        refused = GaugeMetricFamily("haproxy_sync_tls_certificates_refused",
                                    "Files of tls.cert_dir refused now (the certificate served before stays).")
        refused.add_metric([], float(state.certificates_refused))
        expiring = GaugeMetricFamily("haproxy_sync_tls_certificates_expiring",
                                     "Certificates served that expire within tls.expiry_warning.")
        expiring.add_metric([], float(state.certificates_expiring))
        yield from (expiry, refused, expiring)


async def start_server(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """Serve /metrics, /health, /ready and /status; returns the runner to clean up at stop."""
    started = time.monotonic()

    async def metrics_handler(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4"})

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "uptime_seconds": round(time.monotonic() - started, 1)})

    async def ready(_: web.Request) -> web.Response:
        reasons = metrics.view().not_ready()
        return web.json_response({"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200)

    async def status(_: web.Request) -> web.Response:
        state = metrics.view()
        body = {
            "version": __version__,
            "ready": not state.not_ready(),
            "reasons": state.not_ready(),
            "confirmed": state.confirmed,
            "reload_owed": state.reload_owed,
            "last_apply": state.last_apply,
            "last_apply_path": state.last_apply_path,
            "last_apply_age_seconds": state.last_apply_age,
            "watches": [w.__dict__ for w in state.watches],
            "canary_shares": state.canary_shares,
        }
        return web.Response(text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/status", status)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics listening on http://%s:%d/metrics (also /health, /ready, /status)", host, port)
    return runner
