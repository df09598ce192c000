"""Whether a change opens a burst or joins one (``sync.first_change_at_once``).

Quiescence (``sync.wait_min``/``wait_max``) folds a burst of changes into one apply, at the price of
``wait_min`` on every change. A change that comes after a quiet period is the first of its burst, and
nothing is gained by holding it: it is applied at once, and the changes that follow it within
``wait_min`` fold as before. Measured in bench/churn: the quiescence was about half of a change's
convergence on the Runtime API path.

:class:`Bursts` is the daemon's one object for it; ``at`` is always passed in (monotonic seconds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Bursts:
    """When the last change was seen, and whether the changes pending now began after a quiet period."""

    last_seen: float | None = None
    pending: bool = False  # changes seen since the last apply took what had come
    opens: bool = False  # the one pending change came after quiet: apply it without settling

    def seen(self, at: float, quiet: float) -> None:
        """A change seen ``at``: it opens a burst when nothing is pending and no change came in the
        ``quiet`` seconds before it; a change seen while another is pending joins it (both settle)."""
        self.opens = not self.pending and (self.last_seen is None or at - self.last_seen >= quiet)
        self.pending = True
        self.last_seen = at

    def taken(self) -> None:
        """An apply is about to read what has come: the changes seen from now on are pending for the next."""
        self.pending = self.opens = False
