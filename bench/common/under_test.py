"""The HAProxy under test: which binary it is, the master-worker process, what its config holds.

Its files are those a ``haproxy_sync.dev.workdir.Workdir`` of the same directory names
(``haproxy.cfg``, ``master.sock``, ``admin.sock``), plus its log ``haproxy.log``, so a tool configured
by that Workdir writes the file this HAProxy runs and talks to its sockets.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import psutil

from haproxy_sync import haproxy, master
from haproxy_sync.dev.process import HAProxyProcess

from .process import StackError

MB = 1024 * 1024


def haproxy_binary() -> str:
    """The HAProxy executable (the first ``haproxy`` found), or a clear error saying how to install it."""
    binary = haproxy.find_binary("haproxy")
    if binary is None:
        raise StackError("HAProxy is not installed (apt-get install haproxy)")
    return binary


def use_haproxy(binary: str | None) -> None:
    """Make ``binary`` the ``haproxy`` every part of the stack finds (first on PATH, as a link named
    haproxy in a directory of its own); the report's environment then names its version."""
    if not binary:
        return
    path = Path(binary).expanduser().resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise SystemExit(f"--haproxy {binary}: not an executable file")
    directory = Path(tempfile.mkdtemp(prefix="haproxy-sync-bench-bin-"))
    (directory / "haproxy").symlink_to(path)
    os.environ["PATH"] = f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"


class HAProxyUnderTest:
    """A master-worker HAProxy on ``root/haproxy.cfg``, its sockets and log beside it.

    ``initial_config``: the text each :meth:`start` writes to the config first (e.g. a placeholder the
    tool's first render replaces); None starts from whatever the file holds (a tool's first render).
    """

    def __init__(self, root: Path, binary: str | None = None, initial_config: str | None = None) -> None:
        self.root = root
        self.binary = binary
        self.initial_config = initial_config
        self.config = root / "haproxy.cfg"
        self.master_socket = root / "master.sock"
        self.stats_socket = root / "admin.sock"
        self.log_path = root / "haproxy.log"
        self.process: HAProxyProcess | None = None
        self.first_worker: int | None = None  # the worker the last start began with

    def start(self, timeout: float = 10.0, validate: bool = False) -> master.ProcInfo:
        """Start the master and wait for its first worker (``validate``: ``haproxy -c`` first)."""
        binary = self.binary or haproxy_binary()
        if self.initial_config is not None:
            self.config.write_text(self.initial_config)
        if validate:
            haproxy.validate(binary, self.config)
        self.process = HAProxyProcess(binary, self.config, self.master_socket, self.log_path)
        try:
            info = self.process.start(timeout=timeout)
        except haproxy.HAProxyError as exc:
            raise StackError(f"HAProxy under test: {exc}") from None
        self.first_worker = info.current_worker
        return info

    @property
    def master_pid(self) -> int:
        assert self.process is not None and self.process.process is not None
        return self.process.process.pid

    def exit_code(self) -> int | None:
        """The master's exit code once it has exited; None while it runs (or before it started)."""
        return self.process.process.poll() if self.process is not None and self.process.process is not None else None

    def stop(self) -> None:
        """Stop the master and its workers (bounded; SIGKILL if they linger)."""
        if self.process is not None:
            self.process.stop()

    def restart(self) -> master.ProcInfo:
        """A new master and worker, as :meth:`start` began: the old sockets go with the old process (a
        stale file would refuse connections where the first start found none)."""
        self.stop()
        for path in (self.master_socket, self.stats_socket):
            path.unlink(missing_ok=True)
        return self.start()


def footprint(master_pid: int) -> tuple[int, float]:
    """(processes, total RSS in MB) of a HAProxy master and its workers; (0, 0) when it is gone."""
    try:
        master = psutil.Process(master_pid)
        processes = [master, *master.children(recursive=True)]
    except psutil.Error:
        return 0, 0.0
    total = 0
    alive = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
            alive += 1
    return alive, total / MB


def count_backends(config_text: str) -> int:
    return sum(1 for line in config_text.splitlines() if line.startswith("backend "))


def count_servers(config_text: str) -> tuple[int, int]:
    """(server lines, server lines not ``disabled``) of a config."""
    servers = [line for line in config_text.splitlines() if line.lstrip().startswith("server ")]
    return len(servers), sum(1 for line in servers if not re.search(r"\sdisabled(\s|$)", line.split("#")[0]))
