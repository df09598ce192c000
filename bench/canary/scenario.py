"""The scenario on one HAProxy binary: each change applied while the client keeps sending, then measured.

One stack, one keep-alive connection, changes in this order:

1. haproxy-sync starts with ``canary_share = "0%"`` and 7 stable instances plus canary ``c1`` registered
   (the canary in rotation at weight 0: a new version held back before its rollout);
2. for each share of ``--shares``: config.toml edited to it, SIGHUP to the daemon;
3. 3 canaries at 10 %: the share set to 10 % (SIGHUP, when it is not already) and ``c2``, ``c3``
   registered with the tag;
4. promoted: ``c2`` and ``c3`` deregistered and ``c1`` re-registered without the tag, as Nomad's
   promotion does: 8 equal instances, 1/8 expected.

For each change: HAProxy's master is asked for its reload counter and worker (``show proc``), the
change is made, and requests go on in batches of :data:`BATCH` until HAProxy's runtime weights (``show
servers state``) are those the change must give (and, after a SIGHUP, the daemon logged the re-read):
those requests are "during the change". Then ``--requests`` requests are counted by who answered, and
the master is asked again. The promised share is ``haproxy_sync.canary.split(...).share`` (for the
promoted case, 1 of the 8 equal Consul weights).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common.process import StackError, log_lines
from haproxy_sync.canary import Split, split
from haproxy_sync.values import parse_canary_share

from .client import Client, Tally
from .stack import WEIGHTS_ONLY, Edge

STABLE = [f"s{i}" for i in range(1, 8)]
CANARIES = ["c1", "c2", "c3"]
START_SHARE = "0%"
THREE_CANARIES_SHARE = "10%"
BATCH = 50  # requests between two looks at HAProxy's weights while a change is applied


@dataclass(frozen=True)
class Params:
    shares: tuple[str, ...]
    requests: int
    change_timeout: float
    start_timeout: float


def split_weights(chosen: Split, stable: Sequence[str], canaries: Sequence[str]) -> dict[str, int]:
    """Instance id -> the weight ``chosen`` gives it, for those above 0 (HAProxy sends the rest nothing)."""
    weights = {i: chosen.stable_weight for i in stable} | {i: chosen.canary_weight for i in canaries}
    return {i: w for i, w in weights.items() if w > 0}


class Runner:
    """The rows of one binary's run, one per change (:meth:`step`)."""

    def __init__(self, edge: Edge, params: Params, say: Callable[[str], None]) -> None:
        self.edge, self.params, self.say = edge, params, say
        self.client = Client(edge.http_port, list(edge.ports))
        self.share = START_SHARE

    def converge(self, expected: dict[str, int], rereads_before: int | None, tally: Tally) -> float:
        """Send batches into ``tally`` until HAProxy serves ``expected`` (and the daemon logged a re-read
        after ``rereads_before``, when given); the seconds it took. Bounded by ``--change-timeout``."""
        started = time.monotonic()
        deadline = started + self.params.change_timeout
        while True:
            self.client.send(BATCH, tally)
            reread = rereads_before is None or len(self.edge.rereads()) > rereads_before
            serving = self.edge.serving()
            if reread and serving == expected:
                return time.monotonic() - started
            if not self.edge.alive():
                raise StackError(f"haproxy-sync exited during a change; see {self.edge.daemon.log_path}")
            if time.monotonic() > deadline:
                raise StackError(f"timed out after {self.params.change_timeout:g}s waiting for HAProxy's weights "
                                 f"{expected} (serving {serving}; re-read logged: {reread})")

    def step(self, case: str, change: str, apply: Callable[[], None], expected: dict[str, int],
             canaries: Sequence[str], asked: str | None, chosen: Split | None, sighup: bool) -> dict[str, Any]:
        """One change and its measurement, as a row."""
        self.say(f"  {case}: {change}")
        before = self.edge.master()
        connections = self.client.connections
        rereads_before = len(self.edge.rereads())
        during = Tally()
        apply()
        change_seconds = self.converge(expected, rereads_before if sighup else None, during)
        measured = self.client.send(self.params.requests, Tally())
        after = self.edge.master()
        weights = self.edge.serving()
        rereads = self.edge.rereads()[rereads_before:]
        promised = chosen.share if chosen is not None else sum(expected[i] for i in canaries) / sum(expected.values())
        share = measured.share(canaries)
        row: dict[str, Any] = {
            "case": case, "change": change, "stable": len(expected) - len(canaries),
            "canaries": len(canaries), "canary_ids": list(canaries), "asked": asked,
            "split": None if chosen is None else {"stable_weight": chosen.stable_weight,
                                                  "canary_weight": chosen.canary_weight},
            "haproxy_weights": dict(sorted(weights.items())),
            "promised_share": promised, "measured_share": share, "deviation_pp": round((share - promised) * 100, 3),
            "daemon_share": self.edge.daemon_share(),
            "requests": measured.requests, "answers": dict(sorted(measured.answers.items())),
            "failed": measured.failed, "failures": dict(measured.failures),
            "change_seconds": round(change_seconds, 3), "change_requests": during.requests,
            "change_failed": during.failed, "change_failures": dict(during.failures),
            "change_answers": dict(sorted(during.answers.items())),
            "reloads": after.reloads - before.reloads, "failed_reloads": after.failed - before.failed,
            "worker_before": before.current_worker, "worker_after": after.current_worker,
            "connections_opened": self.client.connections - connections,
            "sighup_rereads": len(rereads) if sighup else None,
            "reread_said_weights_only": (bool(rereads) and all(WEIGHTS_ONLY in line for line in rereads)) if sighup
            else None,
        }
        self.say(f"    weights {row['haproxy_weights']}; promised {promised:.4%}, measured {share:.4%} over "
                 f"{measured.requests} requests; {row['reloads']} reloads, {during.failed + measured.failed} failed "
                 f"({during.requests} requests during the change, {change_seconds:.2f} s)")
        return row

    def share_step(self, share: str) -> dict[str, Any]:
        canary = CANARIES[:1]
        chosen = split(len(STABLE), 1, parse_canary_share(share))
        row = self.step(f"{len(STABLE)} stable + 1 canary", f"canary_share {self.share} -> {share} (SIGHUP)",
                        lambda: self.edge.set_share(share), split_weights(chosen, STABLE, canary), canary, share,
                        chosen, sighup=True)
        self.share = share
        return row

    def three_canaries_step(self) -> dict[str, Any]:
        share, resharing = THREE_CANARIES_SHARE, self.share != THREE_CANARIES_SHARE
        chosen = split(len(STABLE), len(CANARIES), parse_canary_share(share))

        def apply() -> None:
            if resharing:
                self.edge.set_share(share)
            for instance in CANARIES[1:]:
                self.edge.register(instance, canary=True)

        change = (f"canary_share {self.share} -> {share} (SIGHUP), " if resharing else "") + \
            f"{', '.join(CANARIES[1:])} registered with the tag"
        row = self.step(f"{len(STABLE)} stable + {len(CANARIES)} canaries", change, apply,
                        split_weights(chosen, STABLE, CANARIES), CANARIES, share, chosen, sighup=resharing)
        self.share = share
        return row

    def promoted_step(self) -> dict[str, Any]:
        promoted = CANARIES[0]

        def apply() -> None:
            for instance in CANARIES[1:]:
                self.edge.deregister(instance)
            self.edge.register(promoted, canary=False)

        expected = dict.fromkeys([*STABLE, promoted], 1)  # Consul's weights, equal: no split without canaries
        return self.step(f"{len(STABLE)} stable + 1 promoted", f"{', '.join(CANARIES[1:])} deregistered, {promoted} "
                         "re-registered without the tag", apply, expected, [promoted], None, None, sighup=False)

    def close(self) -> None:
        self.client.close()


def run(binary: str, root: Path, params: Params, say: Callable[[str], None]) -> dict[str, Any]:
    """The whole scenario on ``binary``: {"rows": [...], "start": {...}}; a failure is an ``error`` beside
    the rows measured before it."""
    result: dict[str, Any] = {"rows": []}
    edge = Edge(root, binary, STABLE, CANARIES, START_SHARE, say, timeout=params.start_timeout)
    runner: Runner | None = None
    try:
        runner = Runner(edge, params, say)
        start = split(len(STABLE), 1, parse_canary_share(START_SHARE))
        initial = Tally()
        seconds = runner.converge(split_weights(start, STABLE, CANARIES[:1]), None, initial)
        first = edge.master()
        result["start"] = {"share": START_SHARE, "haproxy_weights": edge.serving(), "requests": initial.requests,
                           "failed": initial.failed, "seconds": round(seconds, 3), "reloads_at_start": first.reloads}
        for share in params.shares:
            result["rows"].append(runner.share_step(share))
        result["rows"].append(runner.three_canaries_step())
        result["rows"].append(runner.promoted_step())
        last = edge.master()
        result["reloads_after_start"] = last.reloads - first.reloads
        result["worker_unchanged"] = last.current_worker == first.current_worker
    except StackError as exc:  # the logs are kept in the row: the work directory goes at the end of the run
        result["error"] = str(exc)[:500]
        result["daemon_log_tail"] = log_lines(edge.daemon.log_path)[-8:]
        result["haproxy_log_tail"] = log_lines(edge.haproxy.log_path)[-8:]
        say(f"  failed: {result['error']}")
    finally:
        if runner is not None:
            runner.close()
        edge.stop()
    return result
