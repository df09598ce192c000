"""The processes of one invocation: the backend pool, the streamer, and one HAProxy under test per run.

Why one HAProxy under test per run (and not one for the whole invocation): each run must start
from one worker and a reload counter of 0, otherwise the old workers of one variant would be
counted against the next. The backends and the streamer are shared: they only answer. All of them
are bench/common's; what is this benchmark's is the ports they share and the variant's config.

Every process is started in its own session (a Ctrl-C in the terminal reaches only this Python
process) and is stopped by :meth:`Stack.close`, which ``__main__`` calls in a ``finally``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.common.backends import BackendPool, Streamer
from bench.common.ports import free_ports
from bench.common.process import StackError, port_answers, wait_for
from bench.common.under_test import HAProxyUnderTest

from .config import Ports, Variant, under_test_config

#: The backends' tuning: HAProxy's default threads, the default template's timeouts.
BACKENDS = {"maxconn": 4000, "nbthread": None,
            "timeouts": (("connect", "5s"), ("client", "30s"), ("server", "30s"), ("http-keep-alive", "30s"))}


class Stack:
    """Owns the work directory and every process; :meth:`close` is safe to call at any point, twice."""

    def __init__(self, binary: str, backend_count: int = 4, keep_workdir: bool = False) -> None:
        self.binary = binary
        self.keep_workdir = keep_workdir
        self.workdir = Path(tempfile.mkdtemp(prefix="haproxy-sync-reload-options-"))
        frontend, streamer, *backends = free_ports(2 + backend_count)
        self.ports = Ports(frontend=frontend, backends=tuple(backends), streamer=streamer)
        self.backends: BackendPool | None = None
        self.streamer: Streamer | None = None
        self.under_test: HAProxyUnderTest | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.frontend}/"

    def start_backends(self) -> None:
        self.backends = BackendPool(self.workdir, self.ports.backends, binary=self.binary, **BACKENDS)

    def start_streamer(self) -> None:
        # The same streaming backend as bench/churn's: one server, one protocol.
        self.streamer = Streamer(self.workdir, self.ports.streamer, timeout=10.0)

    def start_under_test(self, variant: Variant) -> HAProxyUnderTest:
        """Write the variant's config, check it, and start a fresh master-worker HAProxy on it."""
        self.stop_under_test()
        self.runs += 1
        run_dir = self.workdir / f"run-{self.runs:03d}-{variant.name}"
        run_dir.mkdir()
        self.under_test = HAProxyUnderTest(run_dir, self.binary, initial_config=under_test_config(variant, self.ports))
        self.under_test.start(validate=True)
        try:
            wait_for(lambda: port_answers(self.ports.frontend), 5.0, "the HAProxy under test to listen")
        except StackError as exc:
            raise StackError(f"{exc}; see {self.under_test.log_path}") from None
        return self.under_test

    def stop_under_test(self) -> None:
        if self.under_test is not None:
            self.under_test.stop()
            self.under_test = None

    def close(self) -> None:
        """Stop everything this stack started, newest first; remove the work directory unless kept."""
        self.stop_under_test()
        if self.streamer is not None:
            self.streamer.stop()
            self.streamer = None
        if self.backends is not None:
            self.backends.stop()
            self.backends = None
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
