"""Canary shares: the weights nearest the asked share, and which instances get them."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haproxy_sync import canary, rules
from haproxy_sync.canary import CanaryPolicy
from haproxy_sync.catalog import Instance, Service, Status
from haproxy_sync.config import load_settings

POLICY = CanaryPolicy("canary", 0.10)


def _instances(stable: int, canaries: int, status: Status = Status.PASSING) -> list[Instance]:
    made = [Instance("n1", f"stable-{i}", "10.0.0.1", 8000 + i, status) for i in range(stable)]
    made += [Instance("n1", f"canary-{i}", "10.0.0.2", 9000 + i, status, tags=("canary", "v2"))
             for i in range(canaries)]
    return made


def _shares(service: Service) -> float:
    """The canaries' share of requests under weighted round robin: their weight over the total."""
    total = sum(inst.weight for inst in service.instances)
    return sum(inst.weight for inst in service.instances if "canary" in inst.tags) / total


@pytest.mark.parametrize(("stable", "canaries", "share", "weights"), [
    (7, 1, 0.10, (9, 7)),       # 7 / (7 + 63) = 10 % exactly
    (7, 1, 0.50, (1, 7)),       # the smallest weights that give it exactly
    (7, 1, 0.01, (99, 7)),      # 7 / 700 = 1 % exactly
    (6, 2, 0.10, (3, 1)),       # 2 / 20
    (7, 1, 0.0, (1, 0)),        # none: the canaries serve only requests that ask for them
])
def test_split_gives_the_smallest_weights_of_the_nearest_share(stable: int, canaries: int, share: float,
                                                                weights: tuple[int, int]) -> None:
    chosen = canary.split(stable, canaries, share)
    assert (chosen.stable_weight, chosen.canary_weight) == weights
    assert chosen.share == pytest.approx(share)


@pytest.mark.parametrize(("stable", "canaries", "share"), [(5, 3, 0.07), (1, 9, 0.2), (40, 1, 0.333)])
def test_no_pair_of_weights_comes_nearer_than_the_chosen_one(stable: int, canaries: int, share: float) -> None:
    chosen = canary.split(stable, canaries, share)
    weights = range(1, rules.MAX_WEIGHT + 1)
    nearest = min(abs(c * canaries / (c * canaries + s * stable) - share)
                  for s, c in itertools.product(weights, weights))
    assert abs(chosen.share - share) == pytest.approx(nearest, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200), st.integers(1, 200), st.floats(0.005, 0.95))
def test_the_split_stays_within_the_weights_and_near_the_share(stable: int, canaries: int, share: float) -> None:
    chosen = canary.split(stable, canaries, share)
    assert 1 <= chosen.stable_weight <= rules.MAX_WEIGHT and 1 <= chosen.canary_weight <= rules.MAX_WEIGHT
    # Weights 1..256 reach shares between these two; inside, the nearest is within 1 % of the asked one.
    lowest = canaries / (canaries + rules.MAX_WEIGHT * stable)
    highest = rules.MAX_WEIGHT * canaries / (rules.MAX_WEIGHT * canaries + stable)
    assert abs(chosen.share - min(max(share, lowest), highest)) < 0.01


@pytest.mark.parametrize(("stable", "canaries"), [(0, 1), (1, 0)])
def test_split_refuses_a_side_without_instances(stable: int, canaries: int) -> None:
    with pytest.raises(ValueError, match="no split"):
        canary.split(stable, canaries, 0.1)


def test_weighted_sets_each_sides_weight_whatever_consul_said() -> None:
    instances = _instances(7, 1)
    instances[0] = Instance("n1", "stable-0", "10.0.0.1", 8000, Status.PASSING, weight_passing=50)
    service = canary.weighted(Service("web", tuple(instances)), POLICY)
    assert _shares(service) == pytest.approx(0.10)
    assert {inst.weight for inst in service.instances if "canary" not in inst.tags} == {9}


def test_an_instance_out_of_rotation_keeps_weight_zero_and_is_not_counted() -> None:
    critical = Instance("n1", "canary-sick", "10.0.0.3", 9100, Status.CRITICAL, tags=("canary",))
    service = canary.weighted(Service("web", (*_instances(7, 1), critical)), POLICY)
    assert next(i for i in service.instances if i.id == "canary-sick").weight == 0
    assert _shares(service) == pytest.approx(0.10), "one canary in rotation, not two"


def test_a_warning_instance_gets_its_sides_weight_too() -> None:
    service = canary.weighted(Service("web", tuple(_instances(7, 1, Status.WARNING))), POLICY)
    assert _shares(service) == pytest.approx(0.10)


@pytest.mark.parametrize("instances", [_instances(8, 0), _instances(0, 8)], ids=["no canary", "only canaries"])
def test_without_both_kinds_consul_weights_stay(instances: list[Instance]) -> None:
    service = Service("web", tuple(instances))
    assert canary.weighted(service, POLICY) == service
    assert canary.split_of(service, POLICY) is None


def test_without_a_policy_nothing_changes() -> None:
    service = Service("web", tuple(_instances(7, 1)))
    assert canary.weighted(service, None) is service


def test_promotion_removes_the_tag_and_every_instance_gets_its_count_share() -> None:
    promoted = Service("web", tuple(_instances(8, 0)))
    assert {inst.weight for inst in canary.weighted(promoted, POLICY).instances} == {1}


def test_the_share_in_force_is_what_the_weights_give() -> None:
    services = {
        "split": Service("split", tuple(_instances(7, 1))),
        "none": Service("none", tuple(_instances(7, 0))),
        "only": Service("only", tuple(_instances(0, 2))),
    }
    policies = {name: POLICY for name in (*services, "gone")}
    shares = canary.shares_in_force(policies, services)
    assert shares == {"split": pytest.approx(0.10), "none": 0.0, "only": 1.0}, "no series for a backend not running"
    assert shares["split"] == pytest.approx(_shares(canary.weighted(services["split"], POLICY)))


def test_a_reread_that_changes_only_shares_owes_no_reload(tmp_path) -> None:
    def settings(text: str):
        path = tmp_path / "config.toml"
        path.write_text(f'[[services]]\nname = "cabify"\ncanary_tag = "canary"\n{text}')
        return load_settings(path, env={})

    base = settings('canary_share = "10%"\n')
    assert canary.only_shares_differ(base, settings('canary_share = "50%"\n'))
    assert not canary.only_shares_differ(base, settings('canary_share = "10%"\n')), "nothing changed"
    assert not canary.only_shares_differ(base, settings('canary_share = "50%"\nbalance = "leastconn"\n'))
