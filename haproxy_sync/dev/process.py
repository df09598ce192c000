"""HAProxy run by ourselves, in the foreground, as master-worker: for the sandbox, the tests and the
benchmarks. Production HAProxy is the distribution's service; haproxy-sync only talks to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from haproxy_sync import haproxy, master


class HAProxyProcess:
    """A master-worker HAProxy started in the foreground, as the sandbox and tests run it."""

    def __init__(self, binary: str, config: Path, master_socket: Path, log_path: Path | None = None) -> None:
        self.binary = binary
        self.config = config
        self.master_socket = master_socket
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> master.ProcInfo:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [self.binary, "-W", "-S", str(self.master_socket), "-f", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        if self.log_path:
            log.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise haproxy.HAProxyError(
                    f"HAProxy exited with {self.process.returncode} at start; see {self.log_path}")
            try:
                info = master.show_proc(self.master_socket)
                if info.current_worker:
                    return info
            except haproxy.SocketError:
                pass
            time.sleep(0.05)
        self.stop()
        raise haproxy.HAProxyError(f"HAProxy did not start a worker within {timeout:g}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the master and its workers; SIGKILL the whole group if they linger."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # workers outliving the master
