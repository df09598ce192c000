from __future__ import annotations

from typing import Any

import pytest

from haproxy_sync import rules
from haproxy_sync.catalog import Instance, InvalidInstance, Snapshot, Status, parse_health_entries
from haproxy_sync.reasons import SkipKind


def entry(sid: str = "web-1", *, node: str = "n1", node_addr: str = "10.0.0.1", addr: str = "", port: Any = 8080,
          checks: tuple[str, ...] = ("passing",), weights: Any = None, **service: Any) -> dict[str, Any]:
    svc = {"ID": sid, "Service": "web", "Address": addr, "Port": port, "Tags": [], "Meta": {}, **service}
    if weights is not None:
        svc["Weights"] = weights
    return {
        "Node": {"Node": node, "Address": node_addr},
        "Service": svc,
        "Checks": [{"CheckID": f"c{i}", "Status": s, "Output": "text"} for i, s in enumerate(checks)],
    }


def test_empty_service_address_falls_back_to_node_address() -> None:
    assert Instance.from_entry(entry()).address == "10.0.0.1"
    assert Instance.from_entry(entry(addr="10.9.9.9")).address == "10.9.9.9"


@pytest.mark.parametrize(("checks", "status"), [
    (("passing", "passing"), Status.PASSING),
    (("passing", "warning"), Status.WARNING),
    (("warning", "critical", "passing"), Status.CRITICAL),
    (("maintenance-or-unknown",), Status.CRITICAL),
    ((), Status.PASSING),
])
def test_status_is_the_worst_check(checks: tuple[str, ...], status: Status) -> None:
    assert Instance.from_entry(entry(checks=checks)).status is status


def test_weight_follows_status() -> None:
    weights = {"Passing": 10, "Warning": 0}
    assert Instance.from_entry(entry(weights=weights)).weight == 10
    assert Instance.from_entry(entry(weights=weights, checks=("warning",))).weight == 0
    assert Instance.from_entry(entry(weights=weights, checks=("critical",))).weight == 0
    assert Instance.from_entry(entry(weights={"Passing": 100000, "Warning": 1})).weight == 256


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"addr": "10.0.0.1\n    server evil 1.2.3.4:80"}, "neither an IP address nor a valid host name"),
    ({"addr": "", "node_addr": ""}, "address is empty"),
    ({"port": 0}, "not an integer in 1-65535"),
    ({"port": "80"}, "not an integer in 1-65535"),
    ({"port": 70000}, "not an integer in 1-65535"),
    ({"weights": {"Passing": -1, "Warning": 1}}, "Weights.Passing"),
])
def test_unsafe_instances_are_skipped_with_reason(kwargs: dict[str, Any], reason: str) -> None:
    service, skipped = parse_health_entries("web", [entry("ok-1"), entry("bad-1", **kwargs)])
    assert [i.id for i in service.instances] == ["ok-1"]
    assert len(skipped) == 1 and skipped[0].instance_id == "bad-1" and reason in skipped[0].reason


def test_a_non_list_answer_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_health_entries("web", {"not": "a list"})


def test_garbage_entries_are_skipped() -> None:
    service, skipped = parse_health_entries("web", [None, 3, {"Node": [], "Service": {}}, entry()])
    assert len(service.instances) == 1 and len(skipped) == 3


def test_equality_ignores_order_check_output_and_indexes() -> None:
    a = [entry("w1"), entry("w2", port=8081)]
    b = [entry("w2", port=8081), entry("w1")]
    b[0]["Checks"][0]["Output"] = "different text"
    b[0]["Service"]["ModifyIndex"] = 99
    assert parse_health_entries("web", a)[0] == parse_health_entries("web", b)[0]
    assert Snapshot.of([parse_health_entries("web", a)[0]]) == Snapshot.of([parse_health_entries("web", b)[0]])


def test_same_id_on_two_nodes_gives_two_servers_with_distinct_names() -> None:
    service, _ = parse_health_entries("web", [entry("web-1", node="n1"), entry("web-1", node="n2")])
    names = [s.name for s in service.servers]
    assert len(set(names)) == 2 and all("web-1" in n for n in names)


def test_unsafe_ids_get_safe_stable_server_names() -> None:
    service, _ = parse_health_entries("web", [entry("web 1/\u03b1\n")])
    (server,) = service.servers
    assert server.name.startswith("web_1") and all(c.isalnum() or c in "_.:-" for c in server.name)
    assert server.name == parse_health_entries("web", [entry("web 1/\u03b1\n")])[0].servers[0].name


def test_invalid_instance_carries_its_id() -> None:
    with pytest.raises(InvalidInstance) as err:
        Instance.from_entry(entry("x", port=-1))
    assert err.value.instance_id == "x"


def test_names_that_collide_after_cleaning_are_still_unique() -> None:
    service, _ = parse_health_entries("web", [entry("c", node="a-b"), entry("b-c", node="a"),
                                              entry("b-c", node="a-b")])
    names = [s.name for s in service.servers]
    assert len(set(names)) == 3, names


@pytest.mark.parametrize("address", ["10.0.0.1\n", "host.example\n", "256.1.1.1", "010.0.0.1", "1.2.3", "1.2.3.4 "])
def test_addresses_with_a_trailing_newline_or_out_of_range_are_refused(address: str) -> None:
    with pytest.raises(InvalidInstance, match="address"):
        Instance.from_entry(entry(addr=address))


@pytest.mark.parametrize(("address", "seen"), [
    ("10.0.0.1", "10.0.0.1"), ("::FFFF:1.2.3.4", "::ffff:102:304"), ("Web-1.Example", "web-1.example"),
])
def test_addresses_reach_haproxy_in_one_form(address: str, seen: str) -> None:
    names_allowed = rules.AddressPolicy(host_names=True)
    assert Instance.from_entry(entry(addr=address), names_allowed).address == seen


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "loopback"), ("0.0.0.0", "unspecified"), ("169.254.169.254", "link-local"),
    ("::ffff:127.0.0.1", "loopback"), ("::1", "loopback"), ("fe80::1", "link-local"), ("224.0.0.1", "multicast"),
    ("255.255.255.255", "broadcast"), ("localhost", "host name"), ("0x7f000001", "host name"),
])
def test_the_edge_never_proxies_to_itself_or_its_metadata_unless_a_network_names_it(address: str, why: str) -> None:
    with pytest.raises(InvalidInstance, match=why):
        Instance.from_entry(entry(addr=address))
    if why != "host name":
        listed = rules.AddressPolicy(networks=(rules.network("127.0.0.0/8"), rules.network("::/0"),
                                               rules.network("0.0.0.0/0")))
        if address.startswith("127.") or address == "::ffff:127.0.0.1":
            assert Instance.from_entry(entry(addr=address), listed).address


def test_networks_limit_instances_to_the_operators_own() -> None:
    ours = rules.AddressPolicy(networks=(rules.network("10.0.0.0/8"),))
    assert Instance.from_entry(entry(addr="10.1.2.3"), ours).address == "10.1.2.3"
    with pytest.raises(InvalidInstance, match=r"none of sync\.networks"):
        Instance.from_entry(entry(addr="192.0.2.1"), ours)


@pytest.mark.parametrize("address", ["100.100.100.200", "fd00:ec2::254", "::7f00:1", "64:ff9b::a9fe:a9fe",
                                     "64:ff9b:1::a9fe:a9fe", "2002:7f00:1::1", "fec0::1"])
def test_metadata_and_ipv4_embedding_forms_are_refused_by_default(address: str) -> None:
    with pytest.raises(InvalidInstance, match="refused"):
        Instance.from_entry(entry(addr=address))


def test_a_broad_network_does_not_let_special_addresses_through() -> None:
    halves = rules.AddressPolicy(networks=(rules.network("0.0.0.0/1"), rules.network("128.0.0.0/1")))
    for special in ("127.0.0.1", "0.0.0.0", "169.254.169.254"):
        with pytest.raises(InvalidInstance, match="never a backend"):
            Instance.from_entry(entry(addr=special), halves)
    assert Instance.from_entry(entry(addr="10.0.0.1"), halves).address == "10.0.0.1"


def test_the_edges_own_frontends_are_never_a_backend() -> None:
    policy = rules.AddressPolicy(networks=(rules.network("10.0.0.0/8"),), local=frozenset({"10.0.0.5"}),
                                 own_ports=frozenset({80, 8404}))
    with pytest.raises(InvalidInstance, match="own frontends"):
        Instance.from_entry(entry(addr="10.0.0.5", port=80), policy)
    assert Instance.from_entry(entry(addr="10.0.0.5", port=8080), policy).port == 8080, "an app on the edge is fine"


@pytest.mark.parametrize(("bad", "kind"), [
    (entry(port="80; x"), SkipKind.PORT),
    (entry(addr="10.0.0.1\nserver x"), SkipKind.ADDRESS),
    (entry(weights={"Passing": "ten"}), SkipKind.WEIGHT),
    (entry(weights=[1]), SkipKind.WEIGHT),
    (entry(sid=""), SkipKind.ID),
    (entry(node=""), SkipKind.NODE),
    ({"Node": {"Node": "n1"}, "Service": {"ID": "a"}, "Checks": "all fine"}, SkipKind.ENTRY),
    ("not an object", SkipKind.ENTRY),
])
def test_a_skipped_instance_says_why_as_a_kind_not_a_sentence(bad: Any, kind: SkipKind) -> None:
    _, (skipped,) = parse_health_entries("web", [bad])
    assert skipped.kind is kind and skipped.kind.label == kind.value and skipped.reason


def test_a_service_is_served_up_to_the_bound_and_the_rest_skipped_the_same_each_time() -> None:
    from haproxy_sync.catalog import MAX_INSTANCES
    from haproxy_sync.reasons import SkipKind

    entries = [{"Node": {"Node": f"n{i % 7}", "Address": "10.0.0.1"},
                "Service": {"ID": f"web-{i}", "Address": "", "Port": 1 + i % 60000}, "Checks": []}
               for i in range(MAX_INSTANCES + 25)]
    service, skipped = parse_health_entries("web", entries)
    assert len(service.instances) == MAX_INSTANCES and len(skipped) == 25
    assert {s.kind for s in skipped} == {SkipKind.LIMIT} and "over the bound of" in skipped[0].reason
    again, _ = parse_health_entries("web", list(reversed(entries)))
    assert {i.key for i in again.instances} == {i.key for i in service.instances}, "the same ones, whatever the order"


def test_a_flood_of_invalid_instances_is_one_log_line() -> None:
    from haproxy_sync.catalog import Skipped, skipped_summary
    from haproxy_sync.reasons import SkipKind

    flood = [Skipped("web", f"bad-{i}", "address 999.1.1.1 is not an IP address", SkipKind.ADDRESS)
             for i in range(200_000)] + [Skipped("web", "p", "port 0", SkipKind.PORT)]
    line = skipped_summary("the answer's instances", flood)
    assert "\n" not in line and len(line) < 600, line
    assert line.startswith("skipped 200001 of the answer's instances (address 200000, port 1): id='bad-0'")
    assert "and 199998 more" in line
