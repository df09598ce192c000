"""What one (size, tool) cell runs on: bench/common's stack, set up the way this benchmark needs it.

Why each part is what it is:

* devconsul runs as its own process (bench/common's :class:`~bench.common.consul.DevConsul`): it
  serves thousands of blocking queries, and sharing the orchestrator's interpreter would put its work
  into the timings. It is filled and changed through its bulk endpoints (``/v1/devconsul/bulk/*``):
  one catalog write per call, so 30,000 registrations take about a second and a burst is not slowed
  by devconsul reconciling its catalog per instance.
* The backends are bench/common's :class:`~bench.common.backends.BackendPool` (a second HAProxy
  answering 200 on a few ports); they are not what is measured.
* The HAProxy under test starts from a small placeholder config (a frontend that answers 503), the
  way a host's HAProxy runs before the tool's first render. Both tools then apply their first full
  config by a reload of that running master, so "cold start" ends at the same event for both.
* HAProxy's own health checks are off in both configs by default (``--health-checks`` turns them on
  in both): 30,000-60,000 servers checked every 2 s would have HAProxy flood the pool with about
  15,000-30,000 checks a second on this 2-core machine, and the CPU that takes from the tools would
  be charged to them.

Every child runs in its own session and every start, stop and wait is bounded (bench/common's
:class:`~bench.common.process.Proc` and :func:`~bench.common.process.wait_for`). Everything listens
on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from bench.common.catalog import DEFAULT_SERVICE, HOST_META, TAG, Catalog
from bench.common.consul import DevConsul
from bench.common.ports import HOST, free_ports
from bench.common.process import StackError
from bench.common.syncers import ConsulTemplate, HaproxySync, Syncer, overrides
from bench.common.under_test import HAProxyUnderTest, haproxy_binary
from haproxy_sync.config import default_template_path
from haproxy_sync.dev.workdir import Workdir, merged

HERE = Path(__file__).resolve().parent
CONSUL_TEMPLATE_SOURCE = HERE / "scale.ctmpl"
TEMPLATE = "haproxy.cfg.j2"  # haproxy-sync's default template without checks (see template_without_checks)
BULK_REGISTER = 5000  # registrations per bulk call: ~0.3 s each, well inside the client's timeout
#: haproxy-sync's settings beside the Workdir's defaults: discovery by tag, default sync settings.
SETTINGS = {"log": {"level": "info"}, "consul": {"backoff_max": "2s"}, "discovery": {"enabled": True, "tag": TAG}}


# --- devconsul ---


def populate(consul: DevConsul, catalog: Catalog) -> float:
    """Register the whole catalog; returns the seconds it took."""
    started = time.monotonic()
    bodies = catalog.registrations()
    for start in range(0, len(bodies), BULK_REGISTER):
        consul.bulk("/v1/devconsul/bulk/register", bodies[start:start + BULK_REGISTER])
    return time.monotonic() - started


def weights_over_time(consul: DevConsul, writes: tuple[dict[str, tuple[int, int]], ...],
                      interval: float) -> list[float]:
    """The burst: devconsul makes these writes ``interval`` apart on its own loop; returns their Unix times.

    Timed inside devconsul rather than by separate calls from here, because between two writes
    devconsul is busy answering the blocking queries the first one woke, and a call queued behind
    those answers would land late: the burst would be spread by devconsul's speed, not by design.
    """
    body = {"interval": interval, "writes": [
        {instance_id: {"Passing": passing, "Warning": warning} for instance_id, (passing, warning)
         in weights.items()} for weights in writes]}
    answer: dict[str, Any] = consul.bulk("/v1/devconsul/bulk/weights-over-time", body, timeout=120.0)
    return [float(item["time"]) for item in answer["writes"]]


# --- the HAProxy under test ---


PLACEHOLDER = """\
# The HAProxy under test before the tool's first render: a master-worker with nothing routed.
global
    master-worker
    log stderr format short local0 notice
    maxconn 2000

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend http
    bind {bind}
    http-request return status 503 content-type text/plain string "placeholder"
"""


def layout(workdir: Path, consul: DevConsul, health_checks: bool,
           extra: tuple[tuple[str, str, str], ...] = ()) -> Workdir:
    """The cell's paths, ports and haproxy-sync settings (its config.toml, in haproxy-sync's cell).

    Without ``health_checks`` haproxy-sync renders :data:`TEMPLATE`, written by :func:`tool_for`.
    """
    http_port, stats_port, metrics_port = free_ports(3)
    settings: list[dict[str, dict[str, Any]]] = [SETTINGS]
    if not health_checks:
        settings.append({"haproxy": {"template": str(workdir / TEMPLATE)}})
    return Workdir(workdir, consul.url, http_port, stats_port, metrics_port=metrics_port,
                   haproxy_binary=haproxy_binary(), services=({"name": DEFAULT_SERVICE},),
                   settings=merged(*settings, *overrides(extra)))  # --haproxy-sync-set: experiments, in the JSON


def under_test(layout: Workdir) -> HAProxyUnderTest:
    """The HAProxy under test, (re)started each time on the placeholder config."""
    return HAProxyUnderTest(layout.root, initial_config=PLACEHOLDER.format(bind=f"{HOST}:{layout.http_port}"))


def template_without_checks(source: Path) -> str:
    """haproxy-sync's default template with ``check`` taken off its ``server`` lines.

    Derived at run time rather than copied, so the benchmark keeps measuring the template users get,
    whatever it becomes; only HAProxy's own health checks go (see the module docstring).
    """
    text = source.read_text()
    stripped, count = re.subn(r"^(\s*server\b[^\n]*?)\s+check\b", r"\1", text, flags=re.MULTILINE)
    if count == 0:
        raise StackError(f"found no `server ... check` line to take checks off in {source}; "
                         "run with --health-checks, or update bench/scale/cell.py")
    return stripped


# --- the tools ---


def tool_for(key: str, layout: Workdir, consul: DevConsul, health_checks: bool,
             consul_template: Path | None) -> Syncer:
    """haproxy-sync (``run``, the Workdir's config.toml) or the real consul-template with one template
    over every tagged service, its reload command counting the reloads it sent."""
    if key == "haproxy-sync":
        if not health_checks:
            (layout.root / TEMPLATE).write_text(template_without_checks(default_template_path()))
        return HaproxySync(layout)
    assert consul_template is not None
    return ConsulTemplate(consul_template, CONSUL_TEMPLATE_SOURCE, layout, consul.address, count_reloads=True,
                          replacements={"@TAG@": TAG, "@HOST_META@": HOST_META, "@DEFAULT_SERVICE@": DEFAULT_SERVICE,
                                        "@CHECK@": " check" if health_checks else ""})
