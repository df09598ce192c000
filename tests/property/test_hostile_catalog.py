"""A hostile Consul: whatever is registered, nothing becomes HAProxy syntax, a second command, or a route.

The strategies build values from the separators HAProxy's config parser and its CLI care about
(``%``, ``;``, brackets, colons, slashes, ``#``, backslashes, quotes, every whitespace and control
character, unicode line separators) mixed with pieces of valid values (addresses, names, commands),
so that the search reaches the cases that matter (an IPv6 zone id holding a command) rather than
sampling random text. Each generated catalog goes through the whole path: decoding, routing, slot
planning, render, ``haproxy -c``, the map writer and the runtime planner.

Examples per property: ``HOSTILE_EXAMPLES`` (the README's test section gives the figure and how it
was chosen: several times the examples the search needed to find the zone-id case with an empty
example database, against the code that had it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haproxy_sync import haproxy, rules
from haproxy_sync.catalog import Snapshot, parse_health_entries
from haproxy_sync.commands import Command
from haproxy_sync.config import load_settings
from haproxy_sync.consul import parse_catalog_services
from haproxy_sync.pipeline import prepare
from haproxy_sync.plan import plan_runtime
from haproxy_sync.render import load_template
from haproxy_sync.routing import map_commands, map_text, parse_map_file, routing_for
from tests.audit import grammar
from tests.helpers import prepared_for

HOSTILE_EXAMPLES = int(os.environ.get("HAPROXY_SYNC_HOSTILE_EXAMPLES", "1500"))
TAG = "haproxy-sync"

SEPARATORS = ["%", ";", "[", "]", ":", "/", "#", "\\", '"', "'", "`", "$", "{", "}", "(", ")", ",", "*", "=",
              " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x00", "\x1b", "\x7f", "\x85", "\xa0", "\u2028", "\u2029",
              "\ufeff", "..", "."]
#: The separators that give a value structure in HAProxy's grammars (zone id, command, address, comment).
STRUCTURAL = ["%", ";", "\n", " ", "[", "]", ":", "#"]
PIECES = ["10.0.0.1", "127.0.0.1", "::1", "fe80::1", "2001:db8::5", "::ffff:10.0.0.1", "app.internal", "cabify",
          "web", "slot1", "80", "shutdown frontend http", "set map", "server x 1.2.3.4:80", "program p",
          "command /bin/sh", "use_backend web", "cabify.example.com", "/api", "roundrobin", "eth0"]
fragment = st.one_of(st.sampled_from(SEPARATORS), st.sampled_from(PIECES),
                     st.text(alphabet="abcdef0123456789-_", max_size=4))
#: Strings made of separators and pieces of valid values, or plain random text.
hostile = st.one_of(st.lists(fragment, min_size=1, max_size=6).map("".join), st.text(max_size=12))


def spliced(valid: list[str]) -> st.SearchStrategy[str]:
    """A valid value, or one with a separator and hostile text spliced onto it: where parsers are lenient."""
    return st.one_of(
        st.sampled_from(valid),
        st.tuples(st.sampled_from(valid), st.sampled_from(STRUCTURAL), hostile).map("".join),
        st.tuples(st.sampled_from(valid), st.sampled_from(SEPARATORS), hostile).map("".join),
        hostile,
    )


address = spliced(PIECES[:7])
port = st.one_of(st.integers(1, 65535), st.sampled_from([80, 8080, 65535]), st.integers(-2, 70_000),
                 st.text(max_size=3), st.none())
meta = st.dictionaries(
    st.sampled_from(["haproxy-sync-host", "haproxy-sync-path", "haproxy-sync-balance", "haproxy-sync-health-path"]),
    spliced(["cabify.example.com", "shop.example.com", "/api", "/api/v2", "leastconn", "/health"]),
    max_size=4,
)


def entry(service_name: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "Node": st.fixed_dictionaries({"Node": spliced(["node-1"]), "Address": address}),
        "Service": st.fixed_dictionaries({
            "ID": spliced(["web-1", "web-2"]), "Service": st.just(service_name),
            "Address": address, "Port": port, "Tags": st.lists(hostile, max_size=2), "Meta": meta,
            "Weights": st.fixed_dictionaries({"Passing": st.integers(-1, 300), "Warning": st.integers(-1, 3)}),
            "CreateIndex": st.integers(0, 50),
        }),
        "Checks": st.lists(st.fixed_dictionaries({"Status": st.sampled_from(["passing", "warning", "critical"])}),
                           max_size=2),
    })


@st.composite
def catalogs(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, list[dict[str, Any]]]]:
    """A ``/v1/catalog/services`` answer and a health answer for each service it names."""
    names = draw(st.lists(spliced(["web", "shop", "api"]), max_size=3, unique=True))
    services = {name: [TAG] for name in names}
    health = {"cabify": draw(st.lists(entry("cabify"), min_size=1, max_size=5))}
    for name in names:
        health[name] = draw(st.lists(entry(name), max_size=3))
    return services, health


def _settings(tmp: Path):
    cfg = tmp / "c.toml"
    cfg.write_text(f'[haproxy]\nuser = ""\ngroup = ""\nstats_socket = "{tmp}/s.sock"\n'
                   f'config_path = "{tmp}/haproxy.cfg"\nroutes_map = "{tmp}/routes.map"\n'
                   f'server_state_file = "{tmp}/state"\n[discovery]\nenabled = true\n'
                   '[[services]]\nname = "cabify"\nhost = "cabify.example.com"\n')
    return load_settings(cfg, env={})


_NAME = r"[A-Za-z0-9_.:-]{1,100}"
_IP_OR_HOST = r"(?:\[[0-9a-f:.]+\]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[a-z0-9.-]+)"
BACKEND_LINES = [
    re.compile(rf"# Consul service {_NAME}( \(discovered\))?: \d+ instances, \d+ in rotation, \d+ slots"
               r"(; routed from [a-z0-9.*-]+(/[A-Za-z0-9._~-]+){0,3}/?)?"),
    re.compile(rf"backend {_NAME}"),
    re.compile(rf"    guid be:{_NAME}"),  # HAProxy 3.0: counters kept across reloads (stats-file)
    re.compile(r"    balance (roundrobin|static-rr|leastconn|first|source|random|uri)"),
    re.compile(r"    option httpchk GET /[A-Za-z0-9._~/%?&=+,:@-]*"),
    re.compile(r"    http-check expect status 200-399"),
    re.compile(rf"    server slot\d+ {_IP_OR_HOST}:\d{{1,5}} check weight \d{{1,3}}( guid srv:{_NAME}:slot\d+)?"
               rf"( disabled)?  # {_NAME}"),
    re.compile(r""),
]
MAP_LINE = re.compile(r"(?:\*|[a-z0-9.-]+)(?:/[A-Za-z0-9._~-]+){0,3} [A-Za-z0-9_.:-]{1,100}")


@pytest.mark.timeout(900)  # 1,500 examples, each through haproxy -c: about 80-150 s on 2 cores
@settings(max_examples=HOSTILE_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(catalog=catalogs())
def test_a_hostile_catalog_becomes_only_checked_lines_single_commands_and_owned_routes(
    tmp_path: Path, catalog: tuple[dict[str, list[str]], dict[str, list[dict[str, Any]]]]
) -> None:
    catalog_answer, health = catalog
    settings_ = _settings(tmp_path)
    template = load_template(settings_.template_path())
    discovered, _ = parse_catalog_services(catalog_answer, TAG)
    latest, skipped = {}, {}
    for name, entries in health.items():
        if name == "cabify" or name in discovered:
            latest[name], skipped[name] = parse_health_entries(name, entries)
    prepared = prepared_for(settings_, *latest.values(), template=template, discovered=frozenset(discovered))
    features = haproxy.features(settings_.haproxy.binary)
    routing, snapshot, tables, text = prepared.routing, prepared.snapshot, prepared.tables, prepared.text

    # The config: the lines of an empty catalog, plus backend sections made only of expected lines.
    empty = prepare(settings_, template, features, routing_for(settings_, {"cabify": latest["cabify"]}, ()),
                    Snapshot.of([])).text
    head = empty.split("\n# Consul service")[0]
    assert text.startswith(head), "nothing from Consul changes global, defaults or the frontends"
    backend = ""
    for line in text[len(head):].splitlines():
        assert any(p.fullmatch(line) for p in BACKEND_LINES), f"unexpected line {line!r}"
        backend = line.split()[1] if line.startswith("backend ") else backend
        for guid in re.findall(r"guid (?:be|srv):([^ ]+?)(?::slot\d+)?(?: |$)", line):
            assert guid == backend, f"a guid of another backend in {backend}: {line!r}"
    assert text.count("\nbackend ") == len(routing.services)

    # Each instance is served exactly (its checked address and port in a slot) or skipped with a reason.
    for svc in snapshot.services:
        held = {slot.owner: slot for slot in tables[svc.name].slots if slot.owner is not None}
        for inst in svc.instances:
            slot = held[inst.key]
            assert (slot.address, slot.port) == (inst.address, inst.port)
            assert isinstance(inst.address, rules.Checked) and "%" not in inst.address
    for name, entries in health.items():
        if name not in latest:
            continue
        served = {inst.key for inst in latest[name].instances}
        unserved = [raw for raw in entries if (raw["Node"]["Node"], raw["Service"]["ID"]) not in served]
        assert len(skipped[name]) >= len(unserved), "every entry not served is skipped"
        assert all(s.reason for s in skipped[name]), "with a reason"

    # Routes: each key held by exactly one backend, the file only key-backend lines, read back the same.
    routes = map_text(routing.map_entries)
    assert all(MAP_LINE.fullmatch(line) for line in routes.splitlines()[1:])
    assert parse_map_file(routes) == routing.map_entries
    assert len({r.key for r in routing.routes}) == len(routing.routes)

    # The runtime planner: every command is one command of the (independent) grammar.
    before = prepare(settings_, template, features, routing, Snapshot.of([]))
    plan = plan_runtime(before.tables, tables, before.text, text)
    sequence = [*plan.commands, *map_commands(str(settings_.haproxy.routes_map_path), {}, routing.map_entries)]
    line = ("; ".join(sequence) + "\n").encode()
    backends = {s.backend for s in routing.services}
    assert all(isinstance(c, Command) for c in sequence)
    assert grammar.problems(line if sequence else b"", backends, tmp_path) == []
    assert line.count(b";") == max(len(sequence) - 1, 0), "no command holds a second one"

    # And HAProxy itself accepts the config.
    binary = haproxy.find_binary("haproxy")
    if binary is not None:
        cfg = tmp_path / "candidate.cfg"
        cfg.write_text(text)
        (tmp_path / "routes.map").write_text(routes)
        haproxy.validate(binary, cfg)
