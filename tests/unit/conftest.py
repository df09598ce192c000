"""Fixtures every unit test gets."""

from __future__ import annotations

import pytest

from haproxy_sync import daemon as daemon_module


class QuietNotifier:
    """sdnotify's notifier leaks its socket when there is no NOTIFY_SOCKET (a ResourceWarning here)."""

    def notify(self, state: str) -> None:
        pass


@pytest.fixture(autouse=True)
def quiet_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_module.sdnotify, "SystemdNotifier", QuietNotifier)
