"""The agent's sync of check results to the catalog: an output-only change waits for check_update_interval.

What Consul's agent does (agent/local/state.go ``UpdateCheck``): a check result with the same status
and output changes nothing; one with a new status is written to the catalog at once (the agent marks
the check out of sync and anti-entropy registers it); one whose status did not change but whose output
did is kept in the agent's local state only, and a timer of ``check_update_interval / 2`` plus a random
stagger of up to the interval (2.5 to 7.5 minutes at the default 5m) marks it out of sync later, so
the catalog, its indexes and the blocking queries on them do not move for output noise. A status
change meanwhile syncs the check with its latest output and stops the timer (``SyncChanges``).
``/v1/agent/checks`` reads the local state, so it shows the new output at once.

Why devconsul follows it: a client must not count on an index moving when a check's output changes
(nor on it never moving: it does, minutes later). A test that wants every output in the catalog at
once sets ``check_update_interval=0``, which is Consul's own switch for that (an interval of 0 syncs
every update).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Final

from haproxy_sync.dev.devconsul.base import ServerBase
from haproxy_sync.dev.devconsul.records import Check

DEFAULT_CHECK_UPDATE_INTERVAL: Final = 300.0  # Consul's check_update_interval default, 5m


class CheckSync(ServerBase):
    """Decides when a check result reaches the catalog; keeps the deferred outputs and their timers."""

    _check_update_interval: float
    _deferred: dict[str, asyncio.TimerHandle]
    _random: random.Random

    def _agent_output(self, check: Check) -> str:
        """The output the agent's local state has for a check: a deferred one, else the catalog's."""
        return self._catalog.agent_outputs.get(check.check_id, check.output)

    def _sync_check_result(self, check_id: str, status: str, output: str) -> bool:
        """Apply a check result as the agent would; returns whether the catalog changed now."""
        check = self._catalog.checks.get(check_id)
        if check is None:
            return False
        if status == check.status and output == self._agent_output(check):
            return False
        if self._check_update_interval > 0 and status == check.status:
            self._catalog.agent_outputs[check_id] = output
            self._defer(check_id)
            return False
        self._forget_deferred(check_id)
        return self._catalog.write(checks=[replace(check, status=status, output=output)])

    def _defer(self, check_id: str) -> None:
        """Start the check's deferral timer unless one runs (the first deferred output starts it)."""
        if check_id in self._deferred or self._loop is None or self._stopping:
            return
        interval = self._check_update_interval
        delay = interval / 2 + self._random.uniform(0, interval)
        self._deferred[check_id] = self._loop.call_later(delay, self._sync_deferred, check_id)

    def _sync_deferred(self, check_id: str) -> None:
        """The timer ran out: the latest local output goes to the catalog (no change if it is the same)."""
        self._deferred.pop(check_id, None)
        output = self._catalog.agent_outputs.pop(check_id, None)
        check = self._catalog.checks.get(check_id)
        if output is not None and check is not None:
            self._catalog.write(checks=[replace(check, output=output)])

    def _forget_deferred(self, check_id: str) -> None:
        handle = self._deferred.pop(check_id, None)
        if handle is not None:
            handle.cancel()
        self._catalog.agent_outputs.pop(check_id, None)

    def _reconcile_deferred(self) -> None:
        """Drop what was deferred for checks that are gone (deregistered, reaped, replaced)."""
        checks = self._catalog.checks
        for check_id in [cid for cid in {*self._deferred, *self._catalog.agent_outputs} if cid not in checks]:
            self._forget_deferred(check_id)

    def _sync_all_deferred(self) -> None:
        """What an agent's first full sync after a restart does: every output kept locally goes out now."""
        for check_id in list(self._catalog.agent_outputs):
            self._sync_deferred(check_id)

    def _stop_deferred(self) -> None:
        """Stop the timers; the outputs stay in the catalog's agent state for a restarted server."""
        for handle in self._deferred.values():
            handle.cancel()
        self._deferred.clear()
