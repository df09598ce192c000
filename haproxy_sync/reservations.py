"""Routes kept for a discovered holder that left, for ``discovery.route_grace``.

A branch environment that redeploys drops out of Consul for a moment; without a reservation, any
newcomer claiming the same host in that gap would take its traffic. A route is reserved only for a
holder that holds no route at all any more (one that moved to another route reserves nothing), and
a reservation ends when the grace runs out or the route is given to someone. Pure: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping


class RouteReservations:
    """Route key -> (the backend that left it, when); one per daemon, in memory."""

    def __init__(self) -> None:
        self._departed: dict[str, tuple[str, float]] = {}

    def reserved(self, now: float, grace: float) -> dict[str, str]:
        """The routes still kept for their holders (expired ones are forgotten)."""
        self._departed = {key: held for key, held in self._departed.items() if now - held[1] < grace}
        return {key: backend for key, (backend, _) in self._departed.items()}

    def note(self, before: Mapping[str, str], after: Mapping[str, str], now: float) -> None:
        """The map went from ``before`` to ``after`` (route key -> backend): remember who left."""
        still_holding = set(after.values())
        for key, backend in before.items():
            if backend not in still_holding:
                self._departed.setdefault(key, (backend, now))
        self._departed = {key: held for key, held in self._departed.items()
                          if key not in after and held[0] not in still_holding}


class RouteMemory:
    """What routing remembers between applies: who held which route before this daemon first routed
    (the map on disk, read once when first asked), and the routes reserved for holders that left."""

    def __init__(self, on_disk: Callable[[], dict[str, str]]) -> None:
        self._read_disk = on_disk
        self._on_disk: dict[str, str] | None = None
        self.reservations = RouteReservations()

    def holders(self, routed: Mapping[str, str] | None) -> dict[str, str] | None:
        """Who holds which route when nothing was routed yet (``routed`` None): the map on disk."""
        if routed is not None:
            return None
        if self._on_disk is None:
            self._on_disk = self._read_disk()
        return dict(self._on_disk)

    def reserved(self, now: float, grace: float) -> dict[str, str]:
        return self.reservations.reserved(now, grace)

    def routed(self, before: Mapping[str, str] | None, after: Mapping[str, str], now: float) -> None:
        """A good apply took the routes from ``before`` (None: the first, from the map on disk) to ``after``."""
        self.reservations.note(before if before is not None else (self._on_disk or {}), after, now)
