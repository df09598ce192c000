"""Checks devconsul really runs: HTTP and TCP probes, TTL clocks, critical-service reapers."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Final

import aiohttp

from haproxy_sync.dev.devconsul.agentsync import CheckSync
from haproxy_sync.dev.devconsul.decode import ConsulHTTPError
from haproxy_sync.dev.devconsul.records import (
    _DEFAULT_CHECK_TIMEOUT,
    CRITICAL,
    PASSING,
    WARNING,
    CheckDefinition,
    _go_quote,
    _kv,
    _log,
)

_OUTPUT_MAX: Final = 4096  # Consul's default OutputMaxSize


def _go_op(method: str) -> str:
    return method[:1].upper() + method[1:].lower()


def _dial_error(target: str, exc: OSError) -> str:
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"dial tcp {target}: connect: {reason}"


async def _read_head(content: aiohttp.StreamReader, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _http_status(code: int) -> str:
    """Map a probe's status code to Consul's: 2xx passing, 429 warning, anything else critical."""
    if 200 <= code <= 299:
        return PASSING
    return WARNING if code == 429 else CRITICAL


async def probe_http(session: aiohttp.ClientSession, definition: CheckDefinition) -> tuple[str, str]:
    """Run one HTTP check the way Consul's CheckHTTP does; returns (status, output)."""
    method = definition.method or "GET"
    headers: list[tuple[str, str]] = [(name, value) for name, values in definition.header for value in values]
    names = {name.lower() for name, _ in headers}
    if "user-agent" not in names:
        headers.append(("User-Agent", "Consul Health Check"))
    if "accept" not in names:
        headers.append(("Accept", "text/plain, text/*, */*"))
    url = definition.http
    failure = f"{_go_op(method)} {_go_quote(url)}"
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            data=definition.body.encode() if definition.body else None,
            ssl=not definition.tls_skip_verify,
            timeout=aiohttp.ClientTimeout(total=definition.timeout or _DEFAULT_CHECK_TIMEOUT),
        ) as response:
            head = await _read_head(response.content, _OUTPUT_MAX)
    except TimeoutError:
        deadline = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        return CRITICAL, f"{failure}: {deadline}"
    except aiohttp.ClientConnectorError as exc:
        return CRITICAL, f"{failure}: {_dial_error(f'{exc.host}:{exc.port}', exc.os_error)}"
    except (aiohttp.ClientError, ValueError, OSError) as exc:
        return CRITICAL, f"{failure}: {exc or type(exc).__name__}"
    body = head.decode("utf-8", errors="replace")
    output = f"HTTP {method} {url}: {response.status} {response.reason or ''} Output: {body}"
    return _http_status(response.status), output


async def probe_tcp(definition: CheckDefinition) -> tuple[str, str]:
    """Run one TCP check: passing when a connection can be opened."""
    host, _, port = definition.tcp.rpartition(":")
    try:
        async with asyncio.timeout(definition.timeout or _DEFAULT_CHECK_TIMEOUT):
            _reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except TimeoutError:
        return CRITICAL, f"dial tcp {definition.tcp}: i/o timeout"
    except OSError as exc:
        return CRITICAL, _dial_error(definition.tcp, exc)
    except ValueError:
        return CRITICAL, f"dial tcp {definition.tcp}: invalid address"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return PASSING, f"TCP connect {definition.tcp}: Success"


def _truncate_output(output: str) -> str:
    if len(output) <= _OUTPUT_MAX:
        return output
    return f"{output[:_OUTPUT_MAX]} ... (captured {_OUTPUT_MAX} of {len(output)} bytes)"


def _ttl_expired_output(last_output: str) -> str:
    if not last_output:
        return "TTL expired"
    return f"TTL expired (last output before timeout follows): {last_output}"


@dataclass
class _Runner:
    """What keeps one check alive: a probing task (HTTP/TCP) or a TTL timer."""

    definition: CheckDefinition
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    last_output: str = ""

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.timer is not None:
            self.timer.cancel()


class CheckRunners(CheckSync):
    """Keeps a runner (probe task or TTL timer) and a reaper per check, in step with the catalog; results
    reach the catalog through `CheckSync` (an output-only change waits for check_update_interval)."""

    _runners: dict[str, _Runner]
    _reapers: dict[str, asyncio.TimerHandle]
    _session: aiohttp.ClientSession | None

    def _after_change(self) -> None:
        if self._loop is None:
            return
        self._notify()
        self._reconcile()

    def _reconcile(self) -> None:
        """Start, restart or stop check runners and critical-service reapers to match the catalog."""
        if self._loop is None or self._stopping:
            return
        checks = self._catalog.checks
        for check_id in [cid for cid in self._runners if cid not in checks]:
            self._runners.pop(check_id).cancel()
        for check_id, check in checks.items():
            current = self._runners.get(check_id)
            if check.definition.kind not in ("http", "tcp", "ttl"):
                continue
            if current is None or current.definition != check.definition:
                if current is not None:
                    current.cancel()
                self._runners[check_id] = self._start_runner(check_id, check.definition)
        self._reconcile_reapers()
        self._reconcile_deferred()

    def _start_runner(self, check_id: str, definition: CheckDefinition) -> _Runner:
        assert self._loop is not None
        if definition.kind == "ttl":
            timer = self._loop.call_later(definition.ttl, self._expire_ttl, check_id)
            return _Runner(definition, timer=timer)
        probe = self._run_probe(check_id, definition)
        return _Runner(definition, task=self._loop.create_task(probe, name=f"devconsul-check-{check_id}"))

    def _reconcile_reapers(self) -> None:
        assert self._loop is not None
        checks = self._catalog.checks
        for check_id in [cid for cid in self._reapers if cid not in checks]:
            self._reapers.pop(check_id).cancel()
        for check_id, check in checks.items():
            after = check.definition.deregister_critical_after
            if after <= 0 or not check.service_id:
                continue
            if check.status == CRITICAL and check_id not in self._reapers:
                self._reapers[check_id] = self._loop.call_later(after, self._reap, check_id)
            elif check.status != CRITICAL and check_id in self._reapers:
                self._reapers.pop(check_id).cancel()

    def _reap(self, check_id: str) -> None:
        """DeregisterCriticalServiceAfter ran out: the service goes, with all its checks."""
        self._reapers.pop(check_id, None)
        check = self._catalog.checks.get(check_id)
        if check is None or check.status != CRITICAL:
            return
        _log.warning("devconsul: deregistering critical service %s", _kv(id=check.service_id, check=check_id))
        self._catalog.write(drop_services=[check.service_id])

    def _set_check_state(self, check_id: str, status: str, output: str) -> None:
        check = self._catalog.checks.get(check_id)
        if check is None:
            return
        changed = self._sync_check_result(check_id, status, output)
        if changed and status != check.status:
            _log.info(
                "devconsul: check status %s",
                _kv(id=check_id, service=check.service_id, status=status, was=check.status),
            )

    async def _run_probe(self, check_id: str, definition: CheckDefinition) -> None:
        """Probe every Interval, starting at once; stops when cancelled (deregister, new definition, stop)."""
        assert self._session is not None
        while True:
            try:
                if definition.kind == "http":
                    status, output = await probe_http(self._session, definition)
                else:
                    status, output = await probe_tcp(definition)
            except Exception as exc:  # a bug in a probe must not kill the check silently
                _log.exception("devconsul: check probe failed %s", _kv(id=check_id))
                status, output = CRITICAL, f"devconsul: probe failed: {exc}"
            current = self._catalog.checks.get(check_id)
            if current is None or current.definition != definition:
                return
            self._set_check_state(check_id, status, output)
            await asyncio.sleep(definition.interval)

    def _expire_ttl(self, check_id: str) -> None:
        runner = self._runners.get(check_id)
        check = self._catalog.checks.get(check_id)
        if runner is None or check is None or runner.definition != check.definition:
            return
        runner.timer = None
        if check.status != CRITICAL:
            _log.warning("devconsul: check missed TTL %s", _kv(id=check_id))
        self._set_check_state(check_id, CRITICAL, _ttl_expired_output(runner.last_output))

    def _update_ttl(self, check_id: str, status: str, output: str) -> None:
        """TTL pass/warn/fail/update: set the state and restart the TTL clock."""
        assert self._loop is not None
        runner = self._runners.get(check_id)
        if runner is None or runner.definition.kind != "ttl":
            raise ConsulHTTPError(500, f"CheckID {_go_quote(check_id)} does not have associated TTL")
        output = _truncate_output(output)
        if runner.timer is not None:
            runner.timer.cancel()
        runner.timer = self._loop.call_later(runner.definition.ttl, self._expire_ttl, check_id)
        runner.last_output = output
        self._set_check_state(check_id, status, output)
