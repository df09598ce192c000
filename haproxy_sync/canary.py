"""Pure canary shares: the weights that send a service's canaries a chosen share of its requests.

Nomad tags canary allocations (``canary_tags``) while a deployment waits for promotion. Left alone,
a canary gets its count's share (1 of 8 instances: 12.5 %), whatever the operator wants. With a
:class:`CanaryPolicy`, every instance in rotation with the tag gets one weight and every other one
another, chosen so that the canaries' total share is the asked one however many there are on each
side. The weights are the pair in HAProxy's 1..256 whose share is nearest the asked one (ties: the
smaller weights, so that a later change of counts has room); ``0%`` gives the canaries weight 0 (they
only serve requests that ask for them, see the ``[canary]`` header). Weighted algorithms only
(``roundrobin``, ``static-rr``, ``random``): ``leastconn`` and hashes follow weights loosely.

While a share is in force, Consul's own weights of the instances in rotation are replaced; an instance
Consul gives weight 0 (critical, or a warning weight of 0) keeps it. Without canaries, or with only
canaries (after a promotion that kept the tag on every instance), the service is unchanged: Consul's
weights, as without a policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from haproxy_sync import rules
from haproxy_sync.catalog import Instance, Service, Status
from haproxy_sync.config import Settings


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    """Instances tagged ``tag`` get ``share`` (0 <= share < 1) of the service's requests."""

    tag: str
    share: float


@dataclass(frozen=True, slots=True)
class Split:
    """The weights chosen for ``stable`` and ``canary`` instances in rotation, and the share they give."""

    stable: int
    canary: int
    stable_weight: int
    canary_weight: int

    @property
    def share(self) -> float:
        """The canaries' share of requests these weights give."""
        canary_total = self.canary * self.canary_weight
        return canary_total / (canary_total + self.stable * self.stable_weight)


def split(stable: int, canary: int, share: float) -> Split:
    """The weights for ``stable`` and ``canary`` instances (both at least 1) nearest ``share``."""
    if stable < 1 or canary < 1 or not 0 <= share < 1:
        raise ValueError(f"no split of {stable} stable and {canary} canary instances at {share:.2%}")
    if share == 0:
        return Split(stable, canary, 1, 0)
    best: Split | None = None
    for stable_weight in range(1, rules.MAX_WEIGHT + 1):
        wanted = share * stable * stable_weight / ((1 - share) * canary)
        for canary_weight in {max(1, min(rules.MAX_WEIGHT, int(wanted))),
                              max(1, min(rules.MAX_WEIGHT, int(wanted) + 1))}:
            candidate = Split(stable, canary, stable_weight, canary_weight)
            if best is None or _closer(candidate, best, share):
                best = candidate
    assert best is not None
    return best


def _closer(candidate: Split, best: Split, share: float) -> bool:
    gap, best_gap = abs(candidate.share - share), abs(best.share - share)
    if abs(gap - best_gap) > 1e-12:
        return gap < best_gap
    return (candidate.stable_weight + candidate.canary_weight) < (best.stable_weight + best.canary_weight)


def is_canary(instance: Instance, tag: str) -> bool:
    return tag in instance.tags


def split_of(service: Service, policy: CanaryPolicy | None) -> Split | None:
    """The split in force for ``service`` now: None without a policy or without both kinds in rotation."""
    if policy is None:
        return None
    in_rotation = [inst for inst in service.instances if inst.weight > 0]
    canaries = sum(1 for inst in in_rotation if is_canary(inst, policy.tag))
    if canaries == 0 or canaries == len(in_rotation):
        return None
    return split(len(in_rotation) - canaries, canaries, policy.share)


def weighted(service: Service, policy: CanaryPolicy | None) -> Service:
    """``service`` with the weights of its instances in rotation set by ``policy``'s split."""
    chosen = split_of(service, policy)
    if chosen is None or policy is None:
        return service
    instances = []
    for inst in service.instances:
        if inst.weight == 0:
            instances.append(inst)
            continue
        weight = chosen.canary_weight if is_canary(inst, policy.tag) else chosen.stable_weight
        if inst.status is Status.PASSING:
            instances.append(replace(inst, weight_passing=weight))
        else:
            instances.append(replace(inst, weight_warning=weight))
    return Service(service.name, tuple(instances))


def only_canaries(service: Service, tag: str) -> Service:
    """``service`` with its instances tagged ``tag`` alone, at Consul's weights: a canary backend's."""
    return Service(service.name, tuple(inst for inst in service.instances if is_canary(inst, tag)))


def shares_in_force(policies: Mapping[str, CanaryPolicy], services: Mapping[str, Service]) -> dict[str, float]:
    """Per backend with a policy, the canaries' share its weights give now: the asked share rounded to
    weights, 0 without canaries in rotation, 1 with only canaries (``services``: by backend)."""
    shares = {}
    for backend, policy in policies.items():
        service = services.get(backend)
        if service is None:
            continue
        chosen = split_of(service, policy)
        if chosen is not None:
            shares[backend] = chosen.share
        else:
            in_rotation = [inst for inst in service.instances if inst.weight > 0]
            shares[backend] = 1.0 if in_rotation and all(is_canary(i, policy.tag) for i in in_rotation) else 0.0
    return shares


def only_shares_differ(old: Settings, new: Settings) -> bool:
    """Whether ``new`` differs from ``old`` in services' canary shares alone: weights, which the Runtime
    API sets, so a re-read that changes nothing else owes HAProxy no reload."""
    def without_shares(settings: Settings) -> Settings:
        services = tuple(replace(service, canary_share=0.0) for service in settings.services)
        return replace(settings, services=services, source=None, warnings=())

    return old != new and without_shares(old) == without_shares(new)
