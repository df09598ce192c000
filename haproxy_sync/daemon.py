"""The loop: watch -> quiescence -> render -> validate -> swap -> reload; the one place the parts meet.

One asyncio event loop runs a blocking-query watch per service and the apply loop. Watches only
record the newest value per service and wake the apply loop; the apply loop waits for quiet
(``wait_min``, at most ``wait_max``, consul-template's meaning), takes everything that arrived as one
snapshot, and applies it once. Blocking work (``haproxy -c``, fsync, socket I/O) runs in worker threads.

Signal handlers only set flags and wake the loop, which acts on them at the top of its next cycle.
Each cycle logs one sentence saying what it decided and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
import sdnotify

from haproxy_sync import haproxy
from haproxy_sync.catalog import Service, Snapshot
from haproxy_sync.config import ConfigError, Settings
from haproxy_sync.consul import ServiceWatch, WatchUpdate, backoff_delay, make_client, read_once
from haproxy_sync.plan import describe, diff_snapshots
from haproxy_sync.render import TemplateError, load_template, render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What one apply cycle did: ``ok`` false means it should be retried after a backoff."""

    ok: bool
    sentence: str


def running_config_is_current(master_socket: Path, config_path: Path) -> bool:
    """True when HAProxy's newest worker started after the live config was written.

    A worker reads the config when it starts, so a worker younger than the file runs the file. This
    lets a restarted daemon (or one that found HAProxy down) know whether a reload is still owed.
    """
    try:
        worker = haproxy.show_proc(master_socket).current_worker
        if worker is None:
            return False
        return haproxy.process_start_time(worker) >= config_path.stat().st_mtime
    except (haproxy.HAProxyError, OSError, ValueError):
        return False


def apply_config(settings: Settings, text: str) -> str:
    """Write ``text`` as the live config (validated) and have HAProxy run it; returns what was done.

    Raises :class:`haproxy.ValidationError` (nothing changed), or :class:`haproxy.ReloadError` after
    putting the last confirmed config back when HAProxy refused the new one.
    """
    hap = settings.haproxy
    path = hap.config_path
    if haproxy.read_text(path) == text:
        if running_config_is_current(hap.master_socket, path):
            haproxy.remember_last_good(path)
            return "unchanged; HAProxy already runs it"
        action = "unchanged on disk"
    else:
        haproxy.atomic_write(path, text, binary=hap.binary)
        action = "written"
    haproxy.save_server_state(hap.stats_socket, hap.server_state_file)
    started = time.monotonic()
    try:
        info = haproxy.reload(hap.master_socket, hap.reload_command, hap.reload_timeout)
    except haproxy.ReloadError as exc:
        if "rejected" in str(exc) and haproxy.restore_last_good(path):
            raise haproxy.ReloadError(f"{exc}; restored {haproxy.last_good_path(path).name}") from None
        raise
    haproxy.remember_last_good(path)
    worker = f" (worker {info.current_worker})" if info.current_worker else ""
    return f"{action}; reloaded in {(time.monotonic() - started) * 1000:.0f} ms{worker}"


class Daemon:
    """Keeps HAProxy in step with Consul until stopped."""

    def __init__(self, settings: Settings, reload_settings: Callable[[], Settings] | None = None) -> None:
        self.settings = settings
        self.reload_settings = reload_settings
        self.notifier = sdnotify.SystemdNotifier()
        self.latest: dict[str, Service] = {}
        self.applied: Snapshot | None = None
        self.watches: dict[str, tuple[ServiceWatch, asyncio.Task[None]]] = {}
        self.template: jinja2.Template | None = None
        self._wake = asyncio.Event()
        self._changed = False
        self._stop = False
        self._hup = False
        self._retry_at: float | None = None
        self._failures = 0
        self._ready_sent = False
        self._confirmed = False  # HAProxy is known to run the live file

    # --- signals and updates: set flags, wake the loop ---

    def _on_update(self, update: WatchUpdate) -> None:
        self.latest[update.service.name] = update.service
        self._changed = True
        self._wake.set()

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def request_reload(self) -> None:
        self._hup = True
        self._wake.set()

    # --- the loop ---

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self.template = load_template(self.settings.template_path())
        client = make_client(self.settings.consul)
        watchdog = asyncio.create_task(self._watchdog())
        try:
            self._sync_watches(client)
            log.info(
                "started services=%s consul=%s config=%s",
                ",".join(s.name for s in self.settings.services), self.settings.consul.address,
                self.settings.haproxy.config_path,
            )
            await self._loop(client)
        finally:
            self.notifier.notify("STOPPING=1")
            watchdog.cancel()
            for _, task in self.watches.values():
                task.cancel()
            await asyncio.gather(watchdog, *(task for _, task in self.watches.values()), return_exceptions=True)
            await client.close()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        log.info("stopped")
        return 0

    async def _loop(self, client: object) -> None:
        waiting_logged = False
        while not self._stop:
            await self._sleep_until_woken()
            if self._stop:
                break
            if self._hup:
                self._hup = False
                self._reread(client)
            missing = [s.name for s in self.settings.services if s.name not in self.latest]
            if missing:
                if not waiting_logged:
                    log.info("waiting for a first good read from Consul of services=%s", ",".join(missing))
                    waiting_logged = True
                continue
            retry_due = self._retry_at is not None and time.monotonic() >= self._retry_at
            if not (self._changed or retry_due):
                continue
            await self._settle()
            if self._stop:
                break
            self._changed = False
            self._retry_at = None
            outcome = await self._apply_once()
            self._after(outcome)

    async def _sleep_until_woken(self) -> None:
        timeout = None if self._retry_at is None else max(0.0, self._retry_at - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _settle(self) -> None:
        """Quiescence: wait until no change came for ``wait_min``, but never longer than ``wait_max``."""
        wait_min, wait_max = self.settings.sync.wait_min, self.settings.sync.wait_max
        deadline = time.monotonic() + wait_max
        while not self._stop:
            timeout = min(wait_min, deadline - time.monotonic())
            if timeout <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return

    async def _apply_once(self) -> Outcome:
        snapshot = Snapshot.of(self.latest[s.name] for s in self.settings.services)
        change = describe(diff_snapshots(self.applied, snapshot))
        assert self.template is not None
        try:
            text = render(snapshot, self.settings, self.template)
        except TemplateError as exc:
            return Outcome(False, f"{change}; template error {exc}; kept last good config")
        if self._confirmed and text == haproxy.read_text(self.settings.haproxy.config_path):
            self.applied = snapshot
            return Outcome(True, f"{change}; rendered config identical, no write, no reload")
        try:
            action = await asyncio.to_thread(apply_config, self.settings, text)
        except haproxy.ValidationError as exc:
            if exc.details:
                log.debug("haproxy -c output: %s", exc.details.replace("\n", " | "))
            return Outcome(False, f"{change}; {exc}; kept last good config")
        except haproxy.HAProxyError as exc:
            self._confirmed = False
            return Outcome(False, f"{change}; {exc}")
        self.applied = snapshot
        self._confirmed = True
        return Outcome(True, f"{change}; {action}")

    def _after(self, outcome: Outcome) -> None:
        if outcome.ok:
            self._failures = 0
            log.info("applied %s", outcome.sentence)
            if not self._ready_sent:
                self.notifier.notify("READY=1")
                self._ready_sent = True
            self.notifier.notify(f"STATUS={outcome.sentence[:200]}")
            return
        self._failures += 1
        delay = backoff_delay(self._failures, self.settings.consul.backoff_max)
        self._retry_at = time.monotonic() + delay
        log.error("apply failed: %s; retrying in %.1fs", outcome.sentence, delay)

    # --- configuration changes ---

    def _reread(self, client: object) -> None:
        """SIGHUP: new settings and template, or a clear error and the old ones kept."""
        if self.reload_settings is None:
            return
        try:
            settings = self.reload_settings()
            template = load_template(settings.template_path())
            # A template that loads can still fail on real data: try it before trusting it.
            render(Snapshot.of(self.latest.values()), settings, template)
        except (ConfigError, TemplateError) as exc:
            log.error("SIGHUP: new configuration rejected, keeping the running one: %s",
                      str(exc).replace("\n", "; "))
            return
        if settings.consul != self.settings.consul:
            log.warning("SIGHUP: [consul] changes take effect on restart; other changes applied now")
            settings = _replace_consul(settings, self.settings)
        self.settings, self.template = settings, template
        self._sync_watches(client)
        self._changed = True
        log.info("SIGHUP: configuration and template re-read")

    def _sync_watches(self, client: object) -> None:
        wanted = {s.name for s in self.settings.services}
        for name in list(self.watches):
            if name not in wanted:
                self.watches.pop(name)[1].cancel()
                self.latest.pop(name, None)
        for name in sorted(wanted - self.watches.keys()):
            watch = ServiceWatch(
                client, name, self._on_update,  # type: ignore[arg-type]
                wait=self.settings.consul.wait, backoff_max=self.settings.consul.backoff_max,
            )
            self.watches[name] = (watch, asyncio.create_task(watch.run(), name=f"watch:{name}"))

    async def _watchdog(self) -> None:
        """Ping systemd's watchdog from the loop itself, so a stuck loop stops the pings."""
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if usec <= 0:
            return
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(usec / 2_000_000)


def _replace_consul(new: Settings, old: Settings) -> Settings:
    return dataclasses.replace(new, consul=old.consul)


async def run_once(settings: Settings) -> Outcome:
    """``run --once``: one read of every service, one apply; the caller turns ``ok`` into the exit code."""
    template = load_template(settings.template_path())
    services = await read_once(settings.consul, [s.name for s in settings.services])
    for name, (_, skipped) in services.items():
        for item in skipped:
            log.warning("skipped instance service=%s id=%r reason=%r", name, item.instance_id, item.reason)
    snapshot = Snapshot.of(service for service, _ in services.values())
    change = describe(diff_snapshots(None, snapshot))
    text = render(snapshot, settings, template)
    hap = settings.haproxy
    if haproxy.read_text(hap.config_path) == text:
        return Outcome(True, f"{change}; rendered config identical, no write, no reload")
    try:
        haproxy.show_proc(hap.master_socket)
    except haproxy.SocketError:
        await asyncio.to_thread(haproxy.atomic_write, hap.config_path, text, binary=hap.binary)
        return Outcome(True, f"{change}; written; HAProxy not running, it will load this file when it starts")
    try:
        action = await asyncio.to_thread(apply_config, settings, text)
    except haproxy.HAProxyError as exc:
        return Outcome(False, f"{change}; {exc}")
    return Outcome(True, f"{change}; {action}")
