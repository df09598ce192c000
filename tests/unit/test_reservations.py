"""Route reservations: a holder that left keeps its routes for the grace, and no longer."""

from __future__ import annotations

from haproxy_sync.reservations import RouteMemory, RouteReservations


def test_a_holder_that_left_keeps_its_route_for_the_grace_only() -> None:
    memory = RouteReservations()
    memory.note({"feature-x.example.com": "cabify-feature-x", "*": "cabify"}, {"*": "cabify"}, now=100)
    assert memory.reserved(now=100 + 299, grace=300) == {"feature-x.example.com": "cabify-feature-x"}
    assert memory.reserved(now=100 + 300, grace=300) == {}


def test_a_holder_that_moved_and_a_route_given_away_reserve_nothing() -> None:
    memory = RouteReservations()
    memory.note({"a.example.com": "web"}, {"b.example.com": "web"}, now=0)  # moved to another route
    assert memory.reserved(now=1, grace=300) == {}
    memory.note({"a.example.com": "web"}, {}, now=2)
    assert memory.reserved(now=3, grace=300) == {"a.example.com": "web"}
    memory.note({}, {"a.example.com": "other"}, now=4)  # the route went to someone (after the grace, by routing)
    assert memory.reserved(now=5, grace=300) == {}
    memory.note({"c.example.com": "api"}, {}, now=6)
    memory.note({}, {"d.example.com": "api"}, now=7)  # the holder came back on another route
    assert memory.reserved(now=8, grace=300) == {}


def test_route_memory_reads_the_map_on_disk_once_and_only_before_the_first_routing() -> None:
    reads: list[int] = []

    def on_disk() -> dict[str, str]:
        reads.append(1)
        return {"branch.example.com": "cabify-branch"}

    memory = RouteMemory(on_disk)
    assert memory.holders(None) == {"branch.example.com": "cabify-branch"}
    assert memory.holders(None) == {"branch.example.com": "cabify-branch"} and len(reads) == 1, "read once"
    assert memory.holders({"*": "cabify"}) is None, "once routed, routing itself says who holds what"
    memory.routed(None, {"*": "cabify"}, now=10)  # the first apply: the holder on disk is gone
    assert memory.reserved(now=11, grace=300) == {"branch.example.com": "cabify-branch"}
