"""The processes of one invocation: backends HAProxy, streamer, and one HAProxy under test per run.

Why one HAProxy under test per run (and not one for the whole invocation): each run must start
from one worker and a reload counter of 0, otherwise the old workers of one variant would be
counted against the next. The backends and the streamer are shared: they only answer.

Every process is started in its own session (a Ctrl-C in the terminal reaches only this Python
process) and is stopped by :meth:`Stack.close`, which ``__main__`` calls in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common.ports import free_ports
from haproxy_sync import haproxy

from .config import Ports, Variant, backends_config, under_test_config

REPO = Path(__file__).resolve().parents[2]


CHURN_STREAMER = Path(__file__).resolve().parent.parent / "churn" / "streamer.py"


class StackError(Exception):
    """A process of the benchmark could not be started; the message says which and where its log is."""




def wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


class Stack:
    """Owns the work directory and every process; :meth:`close` is safe to call at any point, twice."""

    def __init__(self, binary: str, backend_count: int = 4, keep_workdir: bool = False) -> None:
        self.binary = binary
        self.keep_workdir = keep_workdir
        self.workdir = Path(tempfile.mkdtemp(prefix="haproxy-sync-reload-options-"))
        frontend, streamer, *backends = free_ports(2 + backend_count)
        self.ports = Ports(frontend=frontend, backends=tuple(backends), streamer=streamer)
        self.backends: haproxy.HAProxyProcess | None = None
        self.streamer: subprocess.Popen[bytes] | None = None
        self.under_test: haproxy.HAProxyProcess | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.frontend}/"

    def start_backends(self) -> None:
        config = self.workdir / "backends.cfg"
        config.write_text(backends_config(self.ports))
        haproxy.validate(self.binary, config)
        self.backends = haproxy.HAProxyProcess(
            self.binary, config, self.workdir / "backends-master.sock", self.workdir / "backends.log"
        )
        try:
            self.backends.start()
        except haproxy.HAProxyError as exc:
            raise StackError(f"backends HAProxy: {exc}") from None
        if not all(wait_for_port(port, 5.0) for port in self.ports.backends):
            raise StackError(f"backends HAProxy does not listen; see {self.workdir / 'backends.log'}")

    def start_streamer(self) -> None:
        log = open(self.workdir / "streamer.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.streamer = subprocess.Popen(
                # The same streaming backend as bench/churn's: one server, one protocol.
                [sys.executable, str(CHURN_STREAMER), "--port", str(self.ports.streamer)],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        finally:
            log.close()
        if not wait_for_port(self.ports.streamer, 10.0):
            raise StackError(f"streamer did not listen; see {self.workdir / 'streamer.log'}")

    def start_under_test(self, variant: Variant) -> haproxy.HAProxyProcess:
        """Write the variant's config, check it, and start a fresh master-worker HAProxy on it."""
        self.stop_under_test()
        self.runs += 1
        run_dir = self.workdir / f"run-{self.runs:03d}-{variant.name}"
        run_dir.mkdir()
        config = run_dir / "haproxy.cfg"
        config.write_text(under_test_config(variant, self.ports))
        haproxy.validate(self.binary, config)
        process = haproxy.HAProxyProcess(self.binary, config, run_dir / "master.sock", run_dir / "haproxy.log")
        self.under_test = process
        try:
            process.start()
        except haproxy.HAProxyError as exc:
            raise StackError(f"HAProxy under test ({variant.name}): {exc}") from None
        if not wait_for_port(self.ports.frontend, 5.0):
            raise StackError(f"HAProxy under test does not listen; see {run_dir / 'haproxy.log'}")
        return process

    def stop_under_test(self) -> None:
        if self.under_test is not None:
            self.under_test.stop()
            self.under_test = None

    def close(self) -> None:
        """Stop everything this stack started, newest first; remove the work directory unless kept."""
        self.stop_under_test()
        if self.streamer is not None and self.streamer.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.streamer.pid, signal.SIGTERM)
            try:
                self.streamer.wait(5.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.streamer.pid, signal.SIGKILL)
                self.streamer.wait(5.0)
        self.streamer = None
        if self.backends is not None:
            self.backends.stop()
            self.backends = None
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
