"""The HAProxy under test: which binary it is, the master-worker process, what its config holds.

Its files are those a ``haproxy_sync.dev.workdir.Workdir`` of the same directory names
(``haproxy.cfg``, ``master.sock``, ``admin.sock``), plus its log ``haproxy.log``, so a tool configured
by that Workdir writes the file this HAProxy runs and talks to its sockets.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def resolve_binaries(parser: argparse.ArgumentParser, given: list[str] | None, default: str) -> list[str]:
    """``--haproxy`` (repeatable) as absolute paths of executables, ``default`` when none is given; a usage
    error (exit 2) names the one that is not an executable file."""
    binaries = given or [default]
    for binary in binaries:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            parser.error(f"--haproxy {binary}: not an executable file")
    return [str(Path(b).resolve()) for b in binaries]


def version_line(binary: str) -> str:
    """The first line of ``haproxy -v``: the report names the exact build measured."""
    try:
        result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{binary} -v: {exc}") from None
    first = (result.stdout or result.stderr).strip().splitlines()
    if result.returncode != 0 or not first or "HAProxy" not in first[0]:
        raise StackError(f"{binary} -v is no HAProxy's answer (exit {result.returncode}): "
                         f"{(result.stdout + result.stderr).strip()[:200]!r}")
    return first[0]


def short_version(line: str) -> str:
    """``3.0.11-9e587df`` from a ``haproxy -v`` line."""
    match = re.search(r"version (\S+)", line)
    return match.group(1) if match else line


def run_per_binary(
    versions: dict[str, str], workroot: Path, say: Callable[[str], None],
    run: Callable[[str, Path], dict[str, Any]], empty: dict[str, Any],
) -> list[dict[str, Any]]:
    """``run(binary, workdir)`` for each HAProxy binary (``versions``: binary -> its -v line), each in a
    directory of its own under ``workroot``; a stack that does not come up (StackError) is an entry with
    ``empty`` and the error, not the end of the others."""
    runs = []
    for index, (binary, line) in enumerate(versions.items()):
        version = short_version(line)
        say(f"HAProxy {version} ({binary}):")
        entry: dict[str, Any] = {"haproxy": binary, "version": version}
        try:
            entry.update(run(binary, workroot / f"{index}-{version}"))
        except StackError as exc:
            entry.update(empty, error=str(exc)[:500])
            say(f"  cannot run: {entry['error']}")
        runs.append(entry)
    return runs


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
