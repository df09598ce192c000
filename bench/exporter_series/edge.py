"""One edge at one size: the product's config rendered in-process, a real HAProxy running it, its scrapes.

Why in-process and without Consul: what is measured is HAProxy's exporter on the config haproxy-sync
writes, not haproxy-sync's reads. So the catalog is turned into the JSON Consul's health endpoint
answers and goes through the product's own path from there: ``catalog.parse_health_entries`` (the
trust boundary, with the settings' address policy), ``routing.routing_for`` (discovery by tag, as
bench/scale runs it), ``pipeline.prepare`` (slots as a first start plans them, free slots included),
``render.render`` on the built-in template, and ``daemon.write_live`` (``haproxy -c`` with the binary
under test, then the config and its routes map). Only the file and socket paths and the two binds
differ from a real edge, and they live in the run's temp directory.

The instances all point at bench/common's :class:`~bench.common.backends.BackendPool` (a second HAProxy
answering 200 on one port per instance index), so HAProxy's checks of ~10,000 servers pass without
the responder falling behind: a Python HTTP server would have to answer ~5,000 checks a second at
1,000 services (``inter 2s``) on a 2-core machine, and checks failing there would change the figures
(a failed check adds and removes timing series) rather than measure them.
"""

from __future__ import annotations

import dataclasses
import http.client
import re
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common.catalog import DEFAULT_SERVICE, TAG, Catalog
from bench.common.ports import HOST, free_ports
from bench.common.process import StackError, wait_for
from bench.common.under_test import HAProxyUnderTest, count_backends, count_servers
from haproxy_sync import haproxy
from haproxy_sync.apply import write_live
from haproxy_sync.catalog import Service, parse_health_entries
from haproxy_sync.config import Settings, default_template_path, load_settings
from haproxy_sync.dev.workdir import Workdir
from haproxy_sync.pipeline import observe, prepare
from haproxy_sync.render import load_template

#: What is scraped, in this order each round. ``?no-maint`` is what the question names; ``?no-maint=``
#: is what Prometheus sends for ``params: {no-maint: [""]}`` (the monitoring role's scrape job), so
#: both forms are measured in case a version parses the bare key differently.
QUERIES = ("", "?no-maint", "?no-maint=")
NODE = "edge-bench"
SERVER_LABELS = re.compile(rb'proxy="([^"]*)",server="([^"]*)"')


FD_ALERT = "Cannot raise FD limit"


def template_without_strict_limits(source: Path) -> str:
    """The built-in template with ``no strict-limits`` in its global section, for a machine whose fd limit is low.

    HAProxy sizes its fd needs as about 2 x maxconn plus one per server with ``check`` (every slot, the
    free ones included) and, with ``strict-limits`` on (the default since 2.3), refuses to start when it
    cannot raise the fd limit that far: at 1,000 services x 10 (20,008 slots) it wants ~24,000 fds, above
    a hard limit of 20,000 that an unprivileged container cannot raise. ``no strict-limits`` makes that a
    warning; the exporter's answer does not depend on it (checks hold an fd for milliseconds, so the
    limit is never reached here). Derived at run time, as bench/scale derives its template without
    checks, so the rest stays the template users get. Used only after HAProxy refused the built-in one.
    """
    text = source.read_text()
    relaxed, count = re.subn(r"^(\s*)master-worker[ \t]*$",
                             r"\1master-worker\n\1no strict-limits  # bench/exporter_series: fd limit below need",
                             text, count=1, flags=re.MULTILINE)
    if count != 1:
        raise StackError(f"found no `master-worker` line in the global section of {source} to add "
                         "`no strict-limits` after; update bench/exporter_series/edge.py")
    return relaxed


def fd_alert(log: Path) -> str:
    """HAProxy's alert when it could not get the fds it wants, or "" (read from its log)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [line for line in lines if FD_ALERT in line]
    return re.sub(r"^\[ALERT\]\s*\(\d+\)\s*:\s*", "", found[-1]).strip().rstrip(".") if found else ""


def write_settings(workdir: Path, binary: str, http_port: int, stats_port: int,
                   template: Path | None = None) -> Settings:
    """A config.toml as an edge's, paths and binds moved into ``workdir``; loaded by the product's loader.

    Discovery by tag with one configured ``default`` service, as bench/scale runs haproxy-sync; Consul's
    address is a port nothing listens on, since nothing here reads Consul (nor serves haproxy-sync's
    metrics). ``template``: none means the built-in one (see :func:`template_without_strict_limits` for the
    only other); the instances' 10.x addresses are allowed beside the loopback.
    """
    (consul_port,) = free_ports(1)  # never contacted
    hap = {"template": str(template)} if template is not None else {}
    layout = Workdir(workdir, f"http://{HOST}:{consul_port}", http_port, stats_port, haproxy_binary=binary,
                     services=({"name": DEFAULT_SERVICE},),
                     settings={"discovery": {"enabled": True, "tag": TAG}, "haproxy": hap,
                               "sync": {"networks": ["127.0.0.0/8", "10.0.0.0/8"]}})
    return load_settings(layout.write(), env={})


def health_entries(catalog: Catalog) -> dict[str, list[dict[str, Any]]]:
    """bench/scale's registrations as ``/v1/health/service/<name>`` answers: one node, all passing."""
    answers: dict[str, list[dict[str, Any]]] = {}
    for index, body in enumerate(catalog.registrations(), start=1):
        service = {**body, "Service": body["Name"], "CreateIndex": index}
        answers.setdefault(body["Name"], []).append({
            "Node": {"Node": NODE, "Address": catalog.address},
            "Service": service,
            "Checks": [{"CheckID": "serfHealth", "Status": "passing"}],
        })
    return answers


@dataclasses.dataclass(frozen=True)
class Built:
    """The rendered edge and what its config holds."""

    text: str
    backends: int
    servers: int
    servers_disabled: int
    render_seconds: float


def build(settings: Settings, catalog: Catalog) -> Built:
    """Render and write the edge's config as a first start of the daemon would (see the module docstring)."""
    started = time.perf_counter()
    policy = settings.address_policy
    services: dict[str, Service] = {}
    for name, entries in health_entries(catalog).items():
        service, skipped = parse_health_entries(name, entries, policy)
        if skipped:
            raise StackError(f"the product skipped {len(skipped)} instance(s) of {name}: {skipped[0].reason}")
        services[name] = service
    tagged = [name for name, service in services.items() if any(TAG in inst.tags for inst in service.instances)]
    observed = observe(settings, services, frozenset(tagged))
    routing = observed.routing
    if routing.unrouted:
        first = routing.unrouted[0]
        raise StackError(f"{len(routing.unrouted)} service(s) left unrouted, e.g. {first.service}: {first.reason}")
    prepared = prepare(settings, load_template(settings.template_path()), haproxy.features(settings.haproxy.binary),
                       routing, observed.snapshot)
    text = prepared.text
    write_live(settings, text, prepared.routes)  # haproxy -c with the binary under test
    servers, enabled = count_servers(text)
    return Built(text, count_backends(text), servers, servers - enabled, time.perf_counter() - started)


def stats_answers(port: int) -> bool:
    """Any HTTP answer on the stats frontend (it has no default backend: ``/`` gets a 503)."""
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return True
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


@dataclasses.dataclass
class Scrape:
    """One ``GET /metrics[query]``: the answer's size and shape, and how long it took."""

    query: str
    status: int
    bytes: int
    series: int  # non-empty, non-comment lines
    server_series: int  # haproxy_server_* lines
    servers_exported: int  # distinct (proxy, server) pairs with at least one series
    first_byte_seconds: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def scrape(port: int, query: str, timeout: float) -> Scrape:
    """Fetch the whole answer, timing only the transfer; the counting happens after the clock stops."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    chunks: list[bytes] = []
    try:
        started = time.perf_counter()
        conn.request("GET", f"/metrics{query}")
        response = conn.getresponse()
        first = time.perf_counter() - started
        while chunk := response.read(1 << 20):
            chunks.append(chunk)
        seconds = time.perf_counter() - started
        status = response.status
    finally:
        conn.close()
    body = b"".join(chunks)
    series = server_series = 0
    servers: set[bytes] = set()
    for line in body.split(b"\n"):
        if not line or line.startswith(b"#"):
            continue
        series += 1
        if line.startswith(b"haproxy_server_"):
            server_series += 1
            match = SERVER_LABELS.search(line)
            if match:
                servers.add(match.group(0))
    return Scrape(query, status, len(body), series, server_series, len(servers), round(first, 4), round(seconds, 4))


def summarize(scrapes: list[Scrape]) -> dict[str, Any]:
    """Per query: the last scrape's counts (checks may add a series or two early on), times as median/min/max."""
    last = scrapes[-1]
    times = [s.seconds for s in scrapes]
    return {
        "status": last.status,
        "series": last.series,
        "series_range": [min(s.series for s in scrapes), max(s.series for s in scrapes)],
        "server_series": last.server_series,
        "servers_exported": last.servers_exported,
        "bytes": last.bytes,
        "seconds_median": round(statistics.median(times), 4),
        "seconds_min": min(times),
        "seconds_max": max(times),
        "first_byte_seconds_median": round(statistics.median(s.first_byte_seconds for s in scrapes), 4),
        "scrapes": len(scrapes),
    }


@dataclasses.dataclass(frozen=True)
class Params:
    instances: int
    settle: float
    scrapes: int
    start_timeout: float
    scrape_timeout: float


def measure(binary: str, services: int, params: Params, pool_ports: tuple[int, ...], workdir: Path,
            say: Any) -> dict[str, Any]:
    """Render, start, settle, scrape, stop: the figures of one binary at one size.

    HAProxy is stopped in a ``finally``: on an error, or on the KeyboardInterrupt the signal handlers
    raise, no process of this run outlives it.
    """
    workdir.mkdir(parents=True)
    http_port, stats_port = free_ports(2)
    catalog = Catalog(services, params.instances, pool_ports)
    result: dict[str, Any] = {"services": services, "instances_total": catalog.total + 1, "template": "built-in"}
    process: HAProxyUnderTest | None = None
    try:
        template: Path | None = None
        while True:
            settings = write_settings(workdir, binary, http_port, stats_port, template)
            say(f"  render {services} services x {params.instances} instances (+ haproxy -c)")
            built = build(settings, catalog)
            say(f"  rendered {built.backends} backends, {built.servers} servers ({built.servers_disabled} disabled) "
                f"in {built.render_seconds:.1f} s; starting HAProxy")
            result.update({
                "backends": built.backends, "servers": built.servers, "servers_disabled": built.servers_disabled,
                "config_bytes": len(built.text.encode()), "render_seconds": round(built.render_seconds, 3),
            })
            process = HAProxyUnderTest(workdir, binary)  # the paths of the settings' [haproxy]
            started = time.monotonic()
            try:
                process.start(timeout=params.start_timeout)
                break
            except StackError:
                process.stop()
                alert = fd_alert(process.log_path)
                if template is not None or not alert:
                    raise
            say(f"  HAProxy refused to start: {alert}; again with `no strict-limits` added to the built-in template")
            result["template"] = "built-in + no strict-limits"
            result["fd_limit_alert"] = alert
            template = workdir / "haproxy.cfg.j2"
            template.write_text(template_without_strict_limits(default_template_path()))
        wait_for(lambda: stats_answers(stats_port), params.start_timeout, "the stats port to answer", 0.1)
        result["start_seconds"] = round(time.monotonic() - started, 2)
        say(f"  HAProxy answers on the stats port after {result['start_seconds']:.1f} s; "
            f"{params.settle:g} s for checks")
        time.sleep(params.settle)
        states = haproxy.servers_state(settings.haproxy.stats_socket)
        result["runtime_servers"] = len(states)
        result["runtime_maintenance"] = sum(1 for s in states if s.in_maintenance)
        result["runtime_up"] = sum(1 for s in states if s.up)
        say(f"  runtime: {result['runtime_servers']} servers, {result['runtime_maintenance']} in maintenance, "
            f"{result['runtime_up']} up")
        runs: dict[str, list[Scrape]] = {query: [] for query in QUERIES}
        for round_ in range(params.scrapes):
            for query in QUERIES:
                one = scrape(stats_port, query, params.scrape_timeout)
                runs[query].append(one)
                say(f"  scrape {round_ + 1}/{params.scrapes} /metrics{query}: HTTP {one.status}, "
                    f"{one.series} series, {one.bytes / 1e6:.1f} MB in {one.seconds:.2f} s")
        result["scrapes"] = {query or "(none)": summarize(found) for query, found in runs.items()}
        in_rotation = result["runtime_servers"] - result["runtime_maintenance"]
        result["exports_every_server"] = result["scrapes"]["(none)"]["servers_exported"] == result["runtime_servers"]
        result["no_maint_exports_the_servers_in_rotation"] = all(
            result["scrapes"][query]["servers_exported"] == in_rotation for query in QUERIES if query)
        if (code := process.exit_code()) is not None:
            raise StackError(f"HAProxy exited with {code} during the scrapes")
    finally:
        if process is not None:
            process.stop()
    return result
