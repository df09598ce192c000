"""The one way from what Consul said to what HAProxy should run, and how to get it there.

``observe`` turns Consul's answers into routing and a snapshot; ``prepare`` turns a snapshot into
slot tables, the config text and the routes map; ``decide`` says whether HAProxy gets there by
Runtime API commands, by a reload, or needs nothing. The daemon calls these three between its
damping and guard (which only narrow the snapshot) and its appliers; every command (``render``,
``check``, ``status``, ``run --once``) calls them through ``read_and_prepare``. So ``render --plan``
predicts the path the daemon takes, because it is the same code.

``observe``, ``prepare`` and ``decide`` are pure (``now`` and ``features`` are passed in);
``read_and_prepare``, ``read_observed``, ``isolate_refusal`` and ``run_once`` are the I/O edges the
commands use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jinja2

from haproxy_sync import haproxy, isolate, master, rules
from haproxy_sync.apply import apply_config, read_running, routes_on_disk, write_live
from haproxy_sync.catalog import Service, Snapshot, parse_health_entries, skipped_summary
from haproxy_sync.certstore import CertSync
from haproxy_sync.commands import Command
from haproxy_sync.config import Settings
from haproxy_sync.consul import read_routed
from haproxy_sync.plan import (
    BackendSlots,
    Plan,
    Running,
    adoption_problem,
    assign_all,
    describe,
    diff_snapshots,
    evict,
    plan_runtime,
    slots_from_config,
    summarize,
)
from haproxy_sync.reasons import ApplyPath, ReloadKind, ReloadReason
from haproxy_sync.render import TemplateError, contract_problem, load_template, render
from haproxy_sync.routing import Routing, map_commands, map_text, parse_map_file, routing_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observed:
    """What Consul said, routed: every routed backend and the newest data of each routed service."""

    routing: Routing
    snapshot: Snapshot


@dataclass(frozen=True)
class Prepared:
    """What HAProxy should run for one snapshot: its routing, slot tables, config text and routes map."""

    routing: Routing
    snapshot: Snapshot
    tables: dict[str, BackendSlots]
    text: str
    rebind_socket: bool = False  # rendered so that a reload binds the (deleted) admin socket again

    @property
    def routes(self) -> str:
        """The routes map file's text."""
        return map_text(self.routing.map_entries)


@dataclass(frozen=True)
class Baseline:
    """What HAProxy runs, as far as whoever decides knows: where a plan starts from.

    The daemon knows it from its last good apply; a command reads it from the live files.
    ``confirmed`` false means HAProxy is not known to run it, so only a reload makes it certain.
    """

    tables: Mapping[str, BackendSlots]
    routes: Mapping[str, str]  # route key -> backend, as in the map
    text: str
    confirmed: bool = True


@dataclass(frozen=True)
class Decision:
    """How HAProxy gets to a :class:`Prepared`: nothing, Runtime API commands, or a reload (and why)."""

    path: ApplyPath
    commands: tuple[Command, ...] = ()
    reload_reason: ReloadReason | None = None

    @classmethod
    def reload(cls, kind: ReloadKind, text: str) -> Decision:
        return cls(ApplyPath.RELOAD, reload_reason=ReloadReason(kind, text))


def observe(
    settings: Settings, latest: Mapping[str, Service], discovered: frozenset[str] = frozenset(),
    previous: Routing | None = None, holders: Mapping[str, str] | None = None,
    reserved: Mapping[str, str] | None = None,
) -> Observed:
    """Route what Consul said (see ``routing_for``) and take the routed services' data as one snapshot."""
    routing = routing_for(settings, latest, discovered, previous, holders=holders, reserved=reserved)
    return Observed(routing, Snapshot.of(latest[s.name] for s in routing.services if s.name in latest))


def sample(settings: Settings) -> Observed:
    """A made-up catalog for ``check``: two passing instances of every configured service."""
    entries = [
        {"Node": {"Node": "node-1", "Address": "192.0.2.10"},  # TEST-NET-1: passes any address policy but networks
         "Service": {"ID": f"sample-{i}", "Address": "", "Port": 8080 + i}, "Checks": []}
        for i in range(2)
    ]
    return observe(settings, {s.name: parse_health_entries(s.name, entries, rules.AddressPolicy())[0]
                              for s in settings.services})


def check_template(settings: Settings, template: jinja2.Template, features: haproxy.Features) -> None:
    """Refuse a template that renders, for the sample catalog, no slot lines or no routes map.

    HAProxy accepts such a config, so nothing else would stop it; then the daemon reloads at every
    change and every reconcile (docs/migration.md). Raises ``TemplateError`` in one line naming the
    template. A template that does not render at all is left to the caller's render, whose error
    names the line.
    """
    observed = sample(settings)
    try:
        prepared = prepare(settings, template, features, observed.routing, observed.snapshot)
    except TemplateError:
        return
    problem = contract_problem(prepared.text, prepared.tables, str(settings.haproxy.routes_map_path))
    if problem is not None:
        raise TemplateError(f"{template.filename or settings.template_path()}: does not render what haproxy-sync "
                            f"changes at runtime: {problem}")


def lay_out(
    settings: Settings, routing: Routing, snapshot: Snapshot, previous: Mapping[str, BackendSlots] | None = None,
    live: str | None = None, idle: Mapping[str, frozenset[str]] | None = None, now: float | None = None,
    evicted: Mapping[str, frozenset[tuple[str, str]]] | None = None,
) -> dict[str, BackendSlots]:
    """The slot tables for ``snapshot``: which server line each instance holds.

    Without ``previous`` tables the live config says who holds which slot (a first start keeps every
    server where HAProxy runs it). ``idle``: draining slots HAProxy reported as carrying nothing
    (their drain ends now); ``evicted``: per backend, instances whose slots are freed without a drain.
    """
    pairs = list(routing.backends)
    if previous is None:
        previous = slots_from_config(live or "", snapshot, pairs)
    if evicted:
        previous = evict(previous, evicted)
    sync = settings.sync
    return assign_all(previous, snapshot, pairs, base=sync.slots, now=time.monotonic() if now is None else now,
                      drain_timeout=sync.drain_timeout, idle=idle,
                      canaries=routing.canaries, canaries_only=routing.canaries_only)


def prepare(
    settings: Settings, template: jinja2.Template, features: haproxy.Features, routing: Routing,
    snapshot: Snapshot, previous: Mapping[str, BackendSlots] | None = None, live: str | None = None,
    idle: Mapping[str, frozenset[str]] | None = None, now: float | None = None,
    evicted: Mapping[str, frozenset[tuple[str, str]]] | None = None, rebind_socket: bool = False,
) -> Prepared:
    """The slot tables (``lay_out``) and the config rendered from them; raises ``TemplateError``."""
    tables = lay_out(settings, routing, snapshot, previous, live, idle, now, evicted)
    text = render(tables, settings, template, routing, features, rebind_socket)
    return Prepared(routing, snapshot, tables, text, rebind_socket)


def decide(
    settings: Settings, baseline: Baseline | None, prepared: Prepared, settings_changed: bool = False
) -> Decision:
    """The runtime-or-reload decision, in the order the reasons rule.

    ``settings_changed``: the template or the settings were re-read since HAProxy last reloaded.
    """
    if (baseline is not None and baseline.confirmed and prepared.text == baseline.text
            and prepared.routing.map_entries == dict(baseline.routes)):
        return Decision(ApplyPath.NONE)
    if prepared.rebind_socket:
        return Decision.reload(ReloadKind.SOCKET_GONE, "HAProxy's admin socket was deleted; a reload binds it again")
    if not settings.sync.runtime_api:
        return Decision.reload(ReloadKind.RUNTIME_OFF, "runtime API off")
    if settings_changed:
        return Decision.reload(ReloadKind.SETTINGS, "template or settings changed")
    if baseline is None or not baseline.confirmed:
        return Decision.reload(ReloadKind.UNCONFIRMED, "HAProxy not yet confirmed running the live config")
    plan: Plan = plan_runtime(baseline.tables, prepared.tables, baseline.text, prepared.text)
    if plan.reload_reason is not None:
        return Decision(ApplyPath.RELOAD, reload_reason=plan.reload_reason)
    routes = map_commands(str(settings.haproxy.routes_map_path), baseline.routes, prepared.routing.map_entries)
    return Decision(ApplyPath.RUNTIME, commands=plan.commands + tuple(routes))


# --- the commands' edge: one read of Consul and of the live files ---


@dataclass(frozen=True)
class OneRead:
    """One read of Consul and of the live files, prepared: what ``render``, ``status`` and ``run --once`` use."""

    prepared: Prepared
    live: str | None  # the live config file, None when there is none
    baseline: Baseline | None  # the live files as HAProxy's starting point, None without a live config

    def decide(self, settings: Settings, confirmed: bool = True, reload_owed: bool = False) -> Decision:
        """The daemon's decision from the live files; ``confirmed`` and ``reload_owed`` as a daemon knows them."""
        baseline = self.baseline
        if baseline is not None and baseline.confirmed != confirmed:
            baseline = dataclasses.replace(baseline, confirmed=confirmed)
        return decide(settings, baseline, self.prepared, reload_owed)


def explain(settings: Settings, one: OneRead, decision: Decision) -> list[str]:
    """What ``render --plan`` prints: the path (``runtime: 7 commands, no reload`` or ``reload: why``),
    then one line per backend that changes and one for the routes."""
    if decision.path is ApplyPath.RELOAD:
        lines = [f"reload: {decision.reload_reason}"]
    elif decision.commands:
        lines = [f"runtime: {len(decision.commands)} commands, no reload"]
    elif decision.path is ApplyPath.NONE:
        lines = ["no change"]
    else:
        lines = ["no change to servers; the file is rewritten"]
    before = one.baseline
    prepared = one.prepared
    lines += [f"  {line}" for line in summarize(before.tables if before else {}, prepared.tables, prepared.snapshot)]
    changes = map_commands(str(settings.haproxy.routes_map_path), before.routes if before else {},
                           prepared.routing.map_entries)
    verbs = Counter(command.verb for command in changes)
    if changes:
        lines.append(f"  routes: +{verbs['add map']} -{verbs['del map']} ~{verbs['set map']}")
    return lines


async def read_observed(settings: Settings, deadline: float = 15.0) -> Observed:
    """One non-blocking read of every routed service, routed with the routes on disk as their holders."""
    read = await read_routed(settings, deadline)
    for name, (_, skipped) in read.services.items():
        if skipped:
            log.warning("service %s: %s", name, skipped_summary("its instances", skipped))
    latest = {name: service for name, (service, _) in read.services.items()}
    return observe(settings, latest, read.discovered, holders=routes_on_disk(settings))


async def read_and_prepare(settings: Settings, template: jinja2.Template, features: haproxy.Features) -> OneRead:
    """Read Consul once and prepare what the daemon would, starting from the live files.

    Raises ``ConsulError`` or ``TemplateError``. The baseline is marked confirmed: the caller knows
    better (``render --plan`` asks the running daemon).
    """
    observed = await read_observed(settings)
    hap = settings.haproxy
    live = haproxy.read_text(hap.config_path)
    try:
        running = read_running(hap.stats_socket)
    except haproxy.HAProxyError:
        running = None  # HAProxy not answering: the file alone is checked, as the daemon does
    adopted = adoptable(settings, live, observed.routing, running)
    baseline = None
    if adopted is not None:
        baseline = Baseline(slots_from_config(adopted, observed.snapshot, observed.routing.backends),
                            parse_map_file(haproxy.read_text(hap.routes_map_path) or ""), adopted)
    prepared = prepare(settings, template, features, observed.routing, observed.snapshot,
                       baseline.tables if baseline is not None else None, adopted)
    return OneRead(prepared, live, baseline)


def adoptable(settings: Settings, live: str | None, routing: Routing,
              running: Mapping[tuple[str, str], Running] | None) -> str | None:
    """``live`` when its slots can be taken over as they are (``plan.adoption_problem``), else None,
    said in one warning: the daemon's first apply and every command judge a live config by this."""
    if live is None:
        return None
    problem = adoption_problem(live, routing.backends, running)
    if problem is None:
        return live
    log.warning("the live config %s cannot be taken over as it is (%s); every backend is laid out anew",
                settings.haproxy.config_path, problem)
    return None


#: Checks a prepared candidate without touching anything live: None when it passes, else why not.
CandidateCheck = Callable[[Prepared], str | None]


def isolate_refusal(
    settings: Settings, template: jinja2.Template, features: haproxy.Features, routing: Routing,
    applied: Snapshot | None, candidate: Snapshot, check: CandidateCheck,
    previous: Mapping[str, BackendSlots] | None = None, live: str | None = None,
    progress: Callable[[], None] | None = None, evicted: Mapping[str, frozenset[tuple[str, str]]] | None = None,
) -> isolate.Isolation:
    """Which instances make HAProxy (or the template) refuse ``candidate`` (see :mod:`isolate`).

    The suspects are the instances changed since ``applied``; when the config without them fails too
    (the refused instance came in by a path the last good apply did not check, such as a runtime change
    whose write to disk failed), every instance is a suspect, from a config with none.
    """

    def search(suspects: tuple[isolate.Suspect, ...]) -> isolate.Isolation:
        def verdict(kept: frozenset[int]) -> str | None:
            if progress is not None:
                progress()
            snapshot = isolate.leave_out(candidate, suspects, kept)
            out = isolate.by_backend(routing.backends, isolate.left_out(suspects, kept), evicted)
            try:
                return check(prepare(settings, template, features, routing, snapshot, previous, live, evicted=out))
            except TemplateError as exc:
                return str(exc)
        return isolate.find_rejected(suspects, verdict)

    changed = isolate.changed(applied, candidate)
    found = search(changed)
    everyone = isolate.everyone(candidate)
    if found.base_refused is not None and len(changed) < len(everyone):
        again = search(everyone)
        return dataclasses.replace(again, checks=again.checks + found.checks)
    return found


async def run_once(settings: Settings) -> tuple[bool, str]:
    """``run --once``: one read of every service, one apply; (applied, the sentence to log)."""
    template = load_template(settings.template_path())
    check_template(settings, template, haproxy.features(settings.haproxy.binary))
    if settings.tls.enabled:  # the store first: the config names its crt-list
        done = await asyncio.to_thread(CertSync().sync, settings, time.time(), settings.haproxy.stats_socket.exists())
        if done.changed:
            log.info("%s", done.sentence())
    one = await read_and_prepare(settings, template, haproxy.features(settings.haproxy.binary))
    prepared = one.prepared
    for item in prepared.routing.unrouted:
        log.warning("discovery: service %s is not routed: %s", item.service, item.reason)
    change = describe(diff_snapshots(None, prepared.snapshot))
    if one.decide(settings).path is ApplyPath.NONE:
        return True, f"{change}; rendered config identical, no write, no reload"
    try:
        master.show_proc(settings.haproxy.master_socket)
    except haproxy.SocketError:
        await asyncio.to_thread(write_live, settings, prepared.text, prepared.routes)
        return True, f"{change}; written; HAProxy not running, it will load this file when it starts"
    try:
        action = await asyncio.to_thread(apply_config, settings, prepared.text, None, prepared.routes)
    except haproxy.HAProxyError as exc:
        return False, f"{change}; {exc}"
    return True, f"{change}; {action}"
