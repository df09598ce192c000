"""Pure routing: discovered services' meta -> backends and routes, conflicts, map commands."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from haproxy_sync.canary import CanaryPolicy
from haproxy_sync.catalog import Instance, Service, Status
from haproxy_sync.config import load_settings
from haproxy_sync.consul import parse_catalog_services
from haproxy_sync.routing import Route, map_commands, map_text, meta_value, parse_map_file, routing_for


@pytest.fixture
def settings(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text('[[services]]\nname = "cabify"\nhost = "cabify.test"\n')
    return load_settings(path, env={})


def service(name: str, *metas: dict[str, str]) -> Service:
    return Service(name, tuple(
        Instance("n1", f"{name}-{i}", "10.0.0.1", 9000 + i, Status.PASSING, meta=tuple(sorted(meta.items())))
        for i, meta in enumerate(metas)
    ))


def test_meta_follows_the_majority_of_instances_ties_to_the_smallest() -> None:
    svc = service("a", {"haproxy-sync-host": "b.test"}, {"haproxy-sync-host": "a.test"},
                  {"haproxy-sync-host": "b.test"}, {})
    assert meta_value(svc, "haproxy-sync-host") == "b.test"
    assert meta_value(service("a", {"k": "y"}, {"k": "x"}), "k") == "x"
    assert meta_value(service("a", {}), "k") == ""


def test_discovered_services_get_backends_and_routes_after_the_configured_ones(settings) -> None:
    latest = {
        "web": registered(service("web", {"haproxy-sync-host": "Web.Test", "haproxy-sync-balance": "leastconn"}), 1),
        "api": registered(service("api", {"haproxy-sync-host": "api.test", "haproxy-sync-path": "/v2/"}), 2),
        "assets": registered(service("assets", {"haproxy-sync-path": "/static"}), 3),
    }
    routing = routing_for(settings, latest, {"web", "api", "assets", "not-read-yet"})
    assert [s.name for s in routing.services] == ["cabify", "api", "assets", "web"]
    assert routing.services[3].balance == "leastconn" and routing.services[3].discovered
    assert routing.map_entries == {
        "cabify.test": "cabify", "web.test": "web", "api.test/v2": "api", "*/static": "assets",
        "api.test": "cabify",  # api's host, on its other paths: the default backend, not `*/...`
    }
    assert routing.unrouted == ()


@pytest.mark.parametrize(("claim", "why"), [
    ({"haproxy-sync-host": "cabify.test", "haproxy-sync-path": "/login"}, "already taken by backend cabify"),
    ({"haproxy-sync-host": "web.test", "haproxy-sync-path": "/api/v2"}, "registered in Consul before it"),
    ({"haproxy-sync-host": "web.test"}, "registered in Consul before it"),
    ({"haproxy-sync-path": "/static/img"}, "registered in Consul before it"),
    ({"haproxy-sync-path": "/"}, "no route"),
])
def test_a_newcomer_takes_no_part_of_a_route_another_backend_holds(settings, claim: dict, why: str) -> None:
    latest = {
        "web": registered(service("web", {"haproxy-sync-host": "web.test"}), 1),
        "assets": registered(service("assets", {"haproxy-sync-path": "/static"}), 2),
        "aaa-evil": registered(service("aaa-evil", claim), 3),
    }
    routing = routing_for(settings, latest, {"web", "assets", "aaa-evil"})
    assert "aaa-evil" not in routing.map_entries.values()
    assert [u.service for u in routing.unrouted] == ["aaa-evil"] and why in routing.unrouted[0].reason
    assert routing.map_entries == {"cabify.test": "cabify", "web.test": "web", "*/static": "assets"}


def test_discovery_hosts_limit_what_registrants_may_claim(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[discovery]\nhosts = ["*.branches.test"]\n[[services]]\nname = "cabify"\n')
    settings = load_settings(path, env={})
    latest = {
        "feature": registered(service("feature", {"haproxy-sync-host": "feature.branches.test"}), 1),
        "prod": registered(service("prod", {"haproxy-sync-host": "cabify.internal"}), 2),
        "login": registered(service("login", {"haproxy-sync-path": "/login"}), 3),
    }
    routing = routing_for(settings, latest, set(latest))
    assert routing.map_entries == {"feature.branches.test": "feature"}
    reasons = {u.service: u.reason for u in routing.unrouted}
    assert "which discovery.hosts does not allow" in reasons["prod"]
    assert "a path on any host" in reasons["login"]


@pytest.mark.parametrize(("meta", "reason"), [
    ({}, "no route"),
    ({"haproxy-sync-host": "bad host"}, "haproxy-sync-host"),
    ({"haproxy-sync-host": "a.test\nbackend evil"}, "haproxy-sync-host"),
    ({"haproxy-sync-host": "a.test\n"}, "haproxy-sync-host"),  # `$` would let a trailing newline through
    ({"haproxy-sync-host": "a.test", "haproxy-sync-path": "/a\n"}, "haproxy-sync-path"),
    ({"haproxy-sync-host": "a.test", "haproxy-sync-health-path": "/h\n"}, "haproxy-sync-health-path"),
    ({"haproxy-sync-host": "a.test", "haproxy-sync-path": "/a b"}, "haproxy-sync-path"),
    ({"haproxy-sync-host": "a.test", "haproxy-sync-path": "/1/2/3/4"}, "haproxy-sync-path"),
    ({"haproxy-sync-host": "a.test", "haproxy-sync-balance": "fastest"}, "haproxy-sync-balance"),
    ({"haproxy-sync-host": "a.test", "haproxy-sync-health-path": "/h'x"}, "haproxy-sync-health-path"),
    ({"haproxy-sync-host": "a.test", "haproxy-sync-canary-share": "100%"}, "haproxy-sync-canary-share"),
    ({"haproxy-sync-host": "a.test", "haproxy-sync-canary-share": "10%\n"}, "haproxy-sync-canary-share"),
    ({"haproxy-sync-host": "a.test", "haproxy-sync-canary-share": "10%", "haproxy-sync-canary-tag": "a b"},
     "haproxy-sync-canary-tag"),
])
def test_unsafe_or_missing_meta_leaves_the_service_unrouted_with_a_reason(settings, meta, reason) -> None:
    routing = routing_for(settings, {"x": service("x", meta)}, {"x"})
    assert [s.name for s in routing.services] == ["cabify"]
    assert len(routing.unrouted) == 1 and reason in routing.unrouted[0].reason


def registered(svc: Service, index: int) -> Service:
    """The service as Consul reports it after registering it at raft index ``index``."""
    return Service(svc.name, tuple(replace(inst, registered=index) for inst in svc.instances))


def test_conflicts_go_to_the_configured_service_then_to_who_registered_first(settings) -> None:
    latest = {
        "b": registered(service("b", {"haproxy-sync-host": "same.test"}), 10),
        "a": registered(service("a", {"haproxy-sync-host": "same.test"}), 20),
        "c": service("c", {"haproxy-sync-host": "cabify.test"}),
        "cabify": service("cabify"),
    }
    routing = routing_for(settings, latest, {"a", "b", "c", "cabify"})
    assert routing.map_entries == {"cabify.test": "cabify", "same.test": "b"}, "b registered first; names never decide"
    assert {u.service for u in routing.unrouted} == {"a", "c"}
    assert "registered in Consul before it" in next(u.reason for u in routing.unrouted if u.service == "a")
    assert "already taken by backend cabify" in next(u.reason for u in routing.unrouted if u.service == "c")


def test_a_route_stays_with_its_holder_whoever_registers_later(settings) -> None:
    holder = registered(service("zeta", {"haproxy-sync-host": "shop.test"}), 50)
    first = routing_for(settings, {"zeta": holder}, {"zeta"})
    assert first.map_entries["shop.test"] == "zeta"
    # A newcomer with an older registration index and a name that sorts first still cannot take it.
    newcomer = registered(service("aaa", {"haproxy-sync-host": "shop.test"}), 5)
    latest = {"zeta": holder, "aaa": newcomer}
    again = routing_for(settings, latest, {"zeta", "aaa"}, previous=first)
    assert again.map_entries["shop.test"] == "zeta"
    assert [(u.service, "held by backend zeta" in u.reason) for u in again.unrouted] == [("aaa", True)]
    # After a restart the routes HAProxy runs (the map) say who holds what.
    restarted = routing_for(settings, latest, {"zeta", "aaa"}, holders={"shop.test": "zeta"})
    assert restarted.map_entries["shop.test"] == "zeta"
    # When the holder goes, its route stays reserved for it while the caller still names it a holder
    # (the daemon does for discovery.route_grace); then it is free for the newcomer.
    gap = routing_for(settings, {"aaa": newcomer}, {"aaa"}, previous=again)
    assert "shop.test" not in gap.map_entries
    assert "held by backend zeta, which left" in gap.unrouted[0].reason
    back = routing_for(settings, latest, {"zeta", "aaa"}, previous=gap, reserved={"shop.test": "zeta"})
    assert back.map_entries["shop.test"] == "zeta", "the holder gets its route back after a gap"
    gone = routing_for(settings, {"aaa": newcomer}, {"aaa"}, previous=gap)
    assert gone.map_entries["shop.test"] == "aaa"


def test_a_contested_free_route_with_no_registration_order_goes_to_nobody(settings) -> None:
    latest = {name: service(name, {"haproxy-sync-host": "same.test"}) for name in ("a", "b")}
    routing = routing_for(settings, latest, {"a", "b"})
    assert "same.test" not in routing.map_entries
    assert {u.service for u in routing.unrouted} == {"a", "b"}
    assert all("routed to none of them" in u.reason for u in routing.unrouted)


def test_map_commands_take_haproxy_from_old_to_new_and_the_file_reads_back() -> None:
    old = {"a.test": "a", "b.test": "b", "c.test": "c"}
    new = {"a.test": "a", "b.test": "b2", "d.test/api": "d"}
    assert map_commands("/m", old, new) == [
        "add map /m d.test/api d", "set map /m b.test b2", "del map /m c.test",
    ]
    assert map_commands("/m", new, new) == []
    assert parse_map_file(map_text(new)) == new
    assert map_text(new) == map_text(dict(reversed(new.items()))), "same routes, same bytes"
    assert Route("", "/api", "x").key == "*/api" and Route("h.test", "", "x").key == "h.test"


def test_catalog_keeps_tagged_services_with_safe_names() -> None:
    names, skipped = parse_catalog_services(
        {"consul": [], "web": ["haproxy-sync", "v1"], "db": ["other"], "bad name": ["haproxy-sync"],
         "web2\n": ["haproxy-sync"]}, "haproxy-sync",
    )
    assert names == {"web"}
    assert sorted(s.service for s in skipped) == ["bad name", "web2\n"]
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_catalog_services(["web"], "haproxy-sync")
    for shape in ({"web": None}, {"web": "haproxy-sync"}, {"web": {"haproxy-sync": True}}):
        with pytest.raises(ValueError, match="not a list of tags"):  # never read as "web is untagged"
            parse_catalog_services({"db": ["haproxy-sync"], **shape}, "haproxy-sync")


def test_a_routed_service_keeps_its_route_while_it_has_no_instances(settings) -> None:
    before = routing_for(settings, {"x": service("x", {"haproxy-sync-host": "x.test"})}, {"x"})
    empty = {"x": Service("x")}
    assert routing_for(settings, empty, {"x"}, before).map_entries == before.map_entries
    assert routing_for(settings, empty, {"x"}).unrouted[0].reason.startswith("no route"), "never routed: no route"
    moved = {"x": service("x", {"haproxy-sync-host": "y.test"})}
    assert routing_for(settings, moved, {"x"}, before).map_entries["y.test"] == "x", "instances back: their meta rules"
    assert "x.test" not in routing_for(settings, empty, set(), before).map_entries, "gone from the catalog: gone"


def frontend(entries: dict[str, str], host: str, path: str, default: str = "cabify") -> str:
    """The template's lookup: a path on any host, the host, a path on the host (1-3 segments), last hit wins."""
    segments = [s for s in path.split("/")[1:4]]
    chosen = default
    for start in ("*", host):
        if start == host and host in entries:
            chosen = entries[host]
        for n in range(1, 4):
            key = start + "".join(f"/{s}" for s in segments[:n])
            if key in entries:
                chosen = entries[key]
    return chosen


def test_a_path_on_any_host_takes_no_path_of_a_host_someone_routes(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[services]]\nname = "cabify"\n[[services]]\nname = "app"\nhost = "app.test"\npath = "/admin"\n')
    settings = load_settings(path, env={})
    latest = {"evil": registered(service("evil", {"haproxy-sync-path": "/account"}), 1),
              "shop": registered(service("shop", {"haproxy-sync-host": "shop.test", "haproxy-sync-path": "/cart"}), 2)}
    entries = routing_for(settings, latest, set(latest)).map_entries
    assert frontend(entries, "app.test", "/admin/x") == "app"
    assert frontend(entries, "app.test", "/account/login") == "cabify", "not evil: app.test is someone's host"
    assert frontend(entries, "shop.test", "/account") == "cabify" and frontend(entries, "shop.test", "/cart") == "shop"
    assert frontend(entries, "other.test", "/account") == "evil", "a host nobody routes: discovery.hosts decides"


def test_a_discovered_service_asks_for_its_canary_share_in_its_meta(settings) -> None:
    shared = service("x", {"haproxy-sync-host": "x.test", "haproxy-sync-canary-share": "25%"})
    tagged = service("y", {"haproxy-sync-host": "y.test", "haproxy-sync-canary-share": "5%",
                           "haproxy-sync-canary-tag": "next"})
    plain = service("z", {"haproxy-sync-host": "z.test"})
    routing = routing_for(settings, {"x": shared, "y": tagged, "z": plain}, {"x", "y", "z"})
    assert routing.canaries == {"x": CanaryPolicy("canary", 0.25), "y": CanaryPolicy("next", 0.05)}


def test_a_discovered_name_of_a_canary_backend_is_refused(settings) -> None:
    squatter = service("cabify:canary", {"haproxy-sync-host": "x.test"})
    routing = routing_for(settings, {"cabify:canary": squatter}, {"cabify:canary"})
    assert [s.name for s in routing.services] == ["cabify"]
    assert "kept for canary backends" in routing.unrouted[0].reason


def test_canary_backends_exist_only_with_the_header_on(tmp_path: Path) -> None:
    def routing(extra: str):
        path = tmp_path / "config.toml"
        path.write_text(f'{extra}[[services]]\nname = "cabify"\ncanary_tag = "canary"\n')
        return routing_for(load_settings(path, env={}), {}, ())

    assert routing("").backends == (("cabify", "cabify"),)
    on = routing('[haproxy]\ncanary_header = "X-Canary"\n')
    assert on.backends == (("cabify", "cabify"), ("cabify:canary", "cabify"))
    assert on.canaries_only == {"cabify:canary": "canary"}


def test_a_name_with_no_room_for_the_canary_suffix_gets_no_canary_backend(tmp_path: Path) -> None:
    """A registrant's 95-character name plus ":canary" is past the 100 of a name: a backend of that name
    would make every Runtime API command to it refused, so it is not made (the share still applies)."""
    path = tmp_path / "config.toml"
    path.write_text('[haproxy]\ncanary_header = "X-Canary"\n[[services]]\nname = "cabify"\n')
    long_name = "s" * 95
    svc = service(long_name, {"haproxy-sync-host": "long.test", "haproxy-sync-canary-share": "10%"})
    routing = routing_for(load_settings(path, env={}), {long_name: svc}, {long_name})
    assert [s.name for s in routing.services] == ["cabify", long_name]
    assert routing.canaries == {long_name: CanaryPolicy("canary", 0.10)}
    assert routing.canary_backends == ()
