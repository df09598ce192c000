from __future__ import annotations

from collections.abc import Iterator

import pytest

from haproxy_sync.devconsul import DevConsulThread
from tests.helpers import App


@pytest.fixture
def consul() -> Iterator[DevConsulThread]:
    """A devconsul of this test's own, on a free port, over real HTTP."""
    server = DevConsulThread(port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_apps() -> Iterator:
    """Start N backend instances (threads on free ports); all stopped at the end of the test."""
    started: list[App] = []

    def make(count: int, prefix: str = "cabify") -> list[App]:
        apps = [App(f"{prefix}-{len(started) + i + 1}") for i in range(count)]
        started.extend(apps)
        return apps

    yield make
    for app in started:
        app.stop()
