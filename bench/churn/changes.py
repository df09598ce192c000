"""The churn itself: one seeded sequence of Consul changes, identical for every mode (pure).

Why a precomputed sequence: the modes are compared side by side, so each must face exactly the same
changes at the same offsets; generating them up front from a seed (no wall clock, no randomness at
run time) guarantees that, and lets the JSON record what was asked.

Each change is one Consul write with a visible effect on exactly one instance, so that convergence
("HAProxy runs the new state") is well defined for each:

* ``add``: register a new instance (passing, with its weight) -> it must take traffic;
* ``remove``: deregister a passing instance -> it must stop taking new traffic;
* ``flap_down`` / ``flap_up``: fail / pass the instance's TTL check -> out of / back into rotation;
* ``weight``: re-register a passing instance with another ``Weights.Passing`` -> HAProxy's weight.

Arrivals are a Poisson process squeezed into the window, so some changes come in bursts (what the
quiescence timers and reload coalescing are for) and some alone. An instance is not touched again
within ``cooldown`` seconds, so that a change is not superseded before any sane mode converges; at
least ``min_passing`` instances always stay in rotation, so a non-2xx answer means the tool under
test failed, not that the benchmark emptied the backend.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("add", "remove", "flap_down", "flap_up", "weight")
WEIGHTS = (1, 5, 10, 20, 50, 100)
INITIAL_WEIGHT = 10


@dataclass(frozen=True)
class Instance:
    """One ``cabify`` instance of the pool: a fixed ID and the backend port it answers on."""

    id: str
    port: int


@dataclass
class InstanceState:
    """What Consul holds for one pool instance at some point of the sequence."""

    registered: bool = False
    passing: bool = True
    weight: int = INITIAL_WEIGHT

    @property
    def serving(self) -> bool:
        return self.registered and self.passing


@dataclass(frozen=True)
class Change:
    """One Consul write at ``offset`` seconds of churn time, and what HAProxy must then run.

    Churn time counts only the churn blocks; :meth:`blocks.Schedule.wall_offset` maps it to the wall clock.

    ``expect_weight`` is the weight the instance must be served with, or ``None`` when it must not
    take new traffic (absent, in maintenance or draining).
    """

    index: int
    offset: float
    kind: str
    instance: str
    port: int
    weight: int
    expect_weight: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """The pool, which instances start registered, and the changes."""

    pool: tuple[Instance, ...]
    initial: tuple[str, ...]
    changes: tuple[Change, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "pool": [asdict(i) for i in self.pool],
            "initial": list(self.initial),
            "changes": [c.to_json() for c in self.changes],
        }


def make_plan(
    ports: list[int],
    *,
    count: int,
    duration: float,
    seed: int,
    initial: int = 10,
    min_passing: int = 4,
    max_registered: int | None = None,
    cooldown: float = 2.5,
) -> Plan:
    """Build ``count`` changes over ``duration`` seconds on a pool of ``len(ports)`` instances.

    The instance IDs and the sequence depend only on the pool size, ``count``, ``duration`` and
    ``seed``; ports are attached afterwards, so every mode of a run gets the same sequence.
    """
    if len(ports) < initial + 2 or initial < min_passing + 1:
        raise ValueError(f"pool of {len(ports)} too small for {initial} initial instances")
    rng = random.Random(seed)
    pool = tuple(Instance(f"cabify-{i + 1:02d}", port) for i, port in enumerate(ports))
    max_registered = max_registered or len(pool) - 2
    state = {inst.id: InstanceState(registered=i < initial) for i, inst in enumerate(pool)}
    ports_of = {inst.id: inst.port for inst in pool}
    last_touched: dict[str, float] = {}
    offsets = _poisson_offsets(rng, count, duration)
    changes: list[Change] = []
    weights = {"add": 0.2, "remove": 0.2, "flap": 0.35, "weight": 0.25}
    for offset in offsets:
        free = [i for i, s in state.items() if offset - last_touched.get(i, -1e9) >= cooldown]
        choice = _pick(rng, weights, state, free, min_passing, max_registered)
        if choice is None:
            continue  # nothing may be touched right now; the sequence is a little shorter
        kind, instance_id = choice
        st = state[instance_id]
        if kind == "add":
            st.registered, st.passing, st.weight = True, True, rng.choice(WEIGHTS)
        elif kind == "remove":
            st.registered = False
        elif kind == "flap_down":
            st.passing = False
        elif kind == "flap_up":
            st.passing = True
        else:
            st.weight = rng.choice([w for w in WEIGHTS if w != st.weight])
        last_touched[instance_id] = offset
        changes.append(Change(
            index=len(changes), offset=round(offset, 4), kind=kind, instance=instance_id,
            port=ports_of[instance_id], weight=st.weight, expect_weight=st.weight if st.serving else None,
        ))
    return Plan(pool, tuple(inst.id for inst in pool[:initial]), tuple(changes))


def _poisson_offsets(rng: random.Random, count: int, duration: float) -> list[float]:
    """``count`` arrival times of a Poisson process, scaled to end 3% before ``duration``."""
    gaps = [rng.expovariate(1.0) for _ in range(count)]
    total = sum(gaps) or 1.0
    offsets, now = [], 0.0
    for gap in gaps:
        now += gap
        offsets.append(now / total * duration * 0.97)
    return offsets


def _pick(
    rng: random.Random,
    weights: dict[str, float],
    state: dict[str, InstanceState],
    free: list[str],
    min_passing: int,
    max_registered: int,
) -> tuple[str, str] | None:
    """Pick a feasible (kind, instance); try the drawn kind first, then the others in a fixed order."""
    serving = [i for i, s in state.items() if s.serving]
    registered = [i for i, s in state.items() if s.registered]
    candidates = {
        "add": [i for i in free if not state[i].registered] if len(registered) < max_registered else [],
        "remove": [i for i in free if state[i].serving] if len(serving) > min_passing else [],
        "flap_down": [i for i in free if state[i].serving] if len(serving) > min_passing else [],
        "flap_up": [i for i in free if state[i].registered and not state[i].passing],
        "weight": [i for i in free if state[i].serving],
    }
    drawn = rng.choices(list(weights), weights=list(weights.values()))[0]
    if drawn == "flap":
        # Bring a failed instance back about as often as one fails, so flaps stay flaps.
        drawn = "flap_up" if candidates["flap_up"] and rng.random() < 0.5 else "flap_down"
    for kind in (drawn, *KINDS):
        if candidates[kind]:
            return kind, rng.choice(sorted(candidates[kind]))
    return None
