"""Every integration test runs under the Runtime API audit (tests/audit): what haproxy-sync sends on
HAProxy's sockets, in every process the test starts, must be commands of the grammar it means to send."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from haproxy_sync.dev.devconsul import DevConsulThread
from tests.audit import grammar

AUDIT_DIR = Path(__file__).resolve().parent.parent / "audit"


@pytest.fixture(autouse=True)
def runtime_api_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Record every line sent to a unix socket by the processes this test starts, and check it after."""
    record = tmp_path / "runtime-api-audit.log"
    monkeypatch.setenv("HAPROXY_SYNC_AUDIT", str(record))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(AUDIT_DIR), os.environ.get("PYTHONPATH")])))
    yield record
    sent = record.read_bytes() if record.exists() else b""
    found = grammar.problems(sent, grammar.known_backends(tmp_path, record), tmp_path, grammar.known_maps(record))
    assert not found, "haproxy-sync sent what it never means to send:\n" + "\n".join(found[:20])


@pytest.fixture
def consul_defaults() -> Iterator[DevConsulThread]:
    """A devconsul with Consul's own defaults (check_update_interval 5m), where tests/conftest.py's
    ``consul`` writes every check result at once: for the tests of devconsul itself."""
    server = DevConsulThread().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Threads for requests that must be in flight while the test does something else."""
    executor = ThreadPoolExecutor(max_workers=4)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
