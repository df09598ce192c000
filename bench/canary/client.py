"""The client: requests over one keep-alive connection to the HAProxy under test, counted by who answered.

Every instance answers ``/`` with its own id (bench/common's BackendPool, one per instance, with the id
as its answer), so the body names the instance HAProxy chose. A request fails when it raises (a reset,
a timeout) or its answer is not ``200`` with a known id; the connection is then opened again, and every
connection opened is counted, so a keep-alive connection that HAProxy closed shows in the figures.
"""

from __future__ import annotations

import collections
import http.client
from collections.abc import Collection
from dataclasses import dataclass, field

from bench.common.ports import HOST


class _CountedConnection(http.client.HTTPConnection):
    """An HTTPConnection that counts how often it connects (http.client reconnects on its own)."""

    opened = 0

    def connect(self) -> None:
        super().connect()
        self.opened += 1


@dataclass
class Tally:
    """What a run of requests got: answers by instance id, failures by reason, connections opened."""

    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def requests(self) -> int:
        return sum(self.answers.values()) + sum(self.failures.values())

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def share(self, ids: Collection[str]) -> float:
        """The share of all requests (failed ones included) that instances ``ids`` answered."""
        return sum(self.answers[i] for i in ids) / self.requests if self.requests else 0.0


class Client:
    """GETs ``/`` on ``port`` of 127.0.0.1 over one kept-alive connection; ``known``: the instance ids."""

    def __init__(self, port: int, known: Collection[str], timeout: float = 5.0) -> None:
        self.known = frozenset(known)
        self._conn = _CountedConnection(HOST, port, timeout=timeout)

    @property
    def connections(self) -> int:
        """TCP connections opened so far: 1 while keep-alive held."""
        return self._conn.opened

    def send(self, count: int, tally: Tally) -> Tally:
        """``count`` requests, one after the other, added to ``tally``."""
        for _ in range(count):
            try:
                self._conn.request("GET", "/")
                response = self._conn.getresponse()
                body = response.read().decode(errors="replace").strip()
            except (OSError, http.client.HTTPException) as exc:
                tally.failures[type(exc).__name__] += 1
                self._conn.close()  # the next request connects again
                continue
            if response.status == 200 and body in self.known:
                tally.answers[body] += 1
            else:
                reason = f"HTTP {response.status}" if response.status != 200 else f"unknown answer {body[:40]!r}"
                tally.failures[reason] += 1
        return tally

    def close(self) -> None:
        self._conn.close()
