"""Everything that touches HAProxy: validation, the atomic swap, reloads, and the two CLI sockets.

All functions here block (subprocesses, unix sockets, fsync); the daemon calls them through
``asyncio.to_thread`` so the event loop never waits on disk or HAProxy.

The file rules, which keep the live ``haproxy.cfg`` always the last good one:

* a candidate is written to a temp file in the same directory, checked with ``haproxy -c``, fsynced,
  and renamed over the live file, then the directory is fsynced; a crash at any point leaves either
  the old or the new complete file;
* ``<config>.last-good`` is a copy of the config HAProxy last confirmed running (a new worker after a
  reload); a reload that HAProxy rejects puts that copy back, so disk keeps matching what runs.
"""

from __future__ import annotations

import contextlib
import grp
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class HAProxyError(Exception):
    """Validation, write or reload of HAProxy failed; the message says what and where."""


class ValidationError(HAProxyError):
    """``haproxy -c`` rejected a config; ``details`` holds HAProxy's own output."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class ReloadError(HAProxyError):
    """HAProxy did not confirm a new worker running the new config."""


class SocketError(HAProxyError):
    """A CLI socket could not be reached or did not answer."""


# --- validation and the atomic swap ---


def validate(binary: str, path: Path, timeout: float = 30.0) -> None:
    """Run ``haproxy -c -f path``; raise :class:`ValidationError` with HAProxy's alerts when it fails."""
    try:
        result = subprocess.run(
            [binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise ValidationError(
            f"haproxy binary {binary!r} not found; install HAProxy or set haproxy.binary"
        ) from None
    except subprocess.TimeoutExpired:
        raise ValidationError(f"`{binary} -c` on {path} took longer than {timeout:g}s") from None
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        alerts = [_strip_pid(line) for line in output.splitlines() if "ALERT" in line]
        summary = "; ".join(alerts[:3]) or (output.splitlines() or ["no output"])[-1]
        raise ValidationError(f"haproxy -c rejected {path}: {summary}", output)


def _strip_pid(line: str) -> str:
    return re.sub(r"^\[ALERT\]\s*\(\d+\)\s*:\s*", "", line.strip())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def last_good_path(path: Path) -> Path:
    return path.with_name(path.name + ".last-good")


def atomic_write(
    path: Path, text: str, *, binary: str | None = None, mode: int | None = None, group: str = ""
) -> None:
    """Replace ``path`` with ``text`` so that readers only ever see a whole old or whole new file.

    When ``binary`` is given the candidate must pass ``haproxy -c`` before it replaces anything.
    ``mode`` and ``group`` set the new file's permissions; without them it keeps those of the file it
    replaces (an operator's ``root:haproxy 0640`` survives), or 0640 when there is none.
    """
    directory = path.parent
    tmp = directory / f".{path.name}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        _set_ownership(path, tmp, mode, group)
        if binary is not None:
            validate(binary, tmp)
        os.replace(tmp, path)
        _fsync_dir(directory)
    except OSError as exc:
        raise HAProxyError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _set_ownership(source: Path, target: Path, mode: int | None, group: str) -> None:
    try:
        st = source.stat()
    except FileNotFoundError:
        st = None
    os.chmod(target, mode if mode is not None else (st.st_mode & 0o7777 if st else 0o640))
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise HAProxyError(f"group {group!r} does not exist; set haproxy.config_group to one that does") from None
        os.chown(target, -1, gid)
    elif st is not None and os.geteuid() == 0:
        os.chown(target, st.st_uid, st.st_gid)


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Temp files a killed writer left beside ``path`` (``.name.tmp-PID`` of a PID that is gone)."""
    removed = []
    for candidate in path.parent.glob(f".{path.name}.tmp-*"):
        pid = candidate.name.rpartition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
    return removed


def remember_last_good(path: Path) -> None:
    """Copy the live config aside as the one HAProxy is confirmed to run."""
    text = read_text(path)
    if text is not None and read_text(last_good_path(path)) != text:
        atomic_write(last_good_path(path), text)


def restore_last_good(path: Path) -> bool:
    """Put the last confirmed config back in place; False when there is none to restore."""
    text = read_text(last_good_path(path))
    if text is None:
        return False
    atomic_write(path, text)
    return True


# --- the CLI sockets ---


def socket_command(path: Path, command: str, timeout: float = 5.0) -> str:
    """Send one command to a HAProxy CLI socket (runtime or master) and return the whole answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    try:
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # non-interactive mode: HAProxy answers, then closes
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except FileNotFoundError:
        raise SocketError(f"HAProxy socket {path} does not exist (is HAProxy running?)") from None
    except ConnectionRefusedError:
        raise SocketError(f"HAProxy socket {path} refused the connection (is HAProxy running?)") from None
    except PermissionError:
        raise SocketError(f"permission denied on HAProxy socket {path}; check its mode and group") from None
    except TimeoutError:
        raise SocketError(f"HAProxy socket {path} did not answer {command.split()[0]!r} in {timeout:g}s") from None
    except OSError as exc:
        raise SocketError(f"HAProxy socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True)
class ProcInfo:
    """The master's ``show proc``: how often it reloaded, how many reloads failed, which workers run."""

    master_pid: int
    reloads: int
    failed: int
    workers: tuple[tuple[int, int], ...]  # (pid, reloads seen by that worker: 0 is the newest)

    @property
    def current_worker(self) -> int | None:
        return next((pid for pid, generation in self.workers if generation == 0), None)


_MASTER_LINE = re.compile(r"^(\d+)\s+master\s+(\d+)(?:\s+\[failed:\s*(\d+)\])?")
_WORKER_LINE = re.compile(r"^(\d+)\s+worker\s+(\d+)")


def parse_show_proc(text: str) -> ProcInfo:
    master = None
    workers: list[tuple[int, int]] = []
    for line in text.splitlines():
        if match := _MASTER_LINE.match(line):
            master = match
        elif match := _WORKER_LINE.match(line):
            workers.append((int(match.group(1)), int(match.group(2))))
    if master is None:
        raise SocketError(f"unexpected `show proc` answer: {text.strip()[:200]!r}")
    return ProcInfo(int(master.group(1)), int(master.group(2)), int(master.group(3) or 0), tuple(workers))


def show_proc(master_socket: Path) -> ProcInfo:
    return parse_show_proc(socket_command(master_socket, "show proc"))


def reload(master_socket: Path, reload_command: tuple[str, ...] = (), timeout: float = 10.0) -> ProcInfo:
    """Reload HAProxy and wait until its master shows a new worker; raise :class:`ReloadError` if not.

    HAProxy 2.6 gives no status for ``reload``, so success is read back from ``show proc``: the
    reload counter moved, the failure counter did not, and the newest worker is a new process.
    """
    try:
        before = show_proc(master_socket)
    except SocketError as exc:
        if not reload_command:
            raise ReloadError(f"cannot reload: {exc}") from None
        before = None
    if reload_command:
        _run_reload_command(reload_command, timeout)
        if before is None:
            return ProcInfo(0, 0, 0, ())  # nothing to read back on hosts without a master socket
    else:
        socket_command(master_socket, "reload", timeout=timeout)
    assert before is not None
    deadline = time.monotonic() + timeout
    while True:
        try:
            after = show_proc(master_socket)
        except SocketError:
            after = None  # the master re-executes itself during a reload; its socket blinks
        if after is not None and after.reloads > before.reloads:
            if after.failed > before.failed:
                raise ReloadError(
                    "HAProxy rejected the reload (failed reloads "
                    f"{before.failed} -> {after.failed}); its log says why; the old worker keeps serving"
                )
            new_worker = after.current_worker
            if new_worker is not None and new_worker != before.current_worker:
                return after
        if time.monotonic() > deadline:
            raise ReloadError(f"HAProxy showed no new worker within {timeout:g}s of the reload")
        time.sleep(0.02)


def _run_reload_command(argv: tuple[str, ...], timeout: float) -> None:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReloadError(f"reload command {' '.join(argv)!r} failed: {exc}") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise ReloadError(
            f"reload command {' '.join(argv)!r} exited {result.returncode}: {message[-1] if message else ''}"
        )


# --- the runtime API ---


@dataclass(frozen=True)
class ServerState:
    """One line of ``show servers state``: what HAProxy runs for one server right now."""

    backend: str
    name: str
    address: str
    port: int
    operational: int  # 0 stopped (DOWN), 1 starting, 2 running (UP), 3 stopping
    admin: int  # bit field: 0x01 forced maint, 0x04 config maint, 0x08 forced drain, ...
    weight: int

    @property
    def in_maintenance(self) -> bool:
        # Forced, inherited or resolution maintenance. The config bit (0x04) stays set after
        # `set server state ready` on a server the file had `disabled`: it records, not enforces.
        return bool(self.admin & 0x23)

    @property
    def draining(self) -> bool:
        return bool(self.admin & 0x18)

    @property
    def up(self) -> bool:
        """Taking traffic: running and not in maintenance."""
        return self.operational == 2 and not self.in_maintenance


def _state_line(cols: list[str]) -> ServerState | None:
    if len(cols) < 19:
        return None
    return ServerState(
        backend=cols[1], name=cols[3], address=cols[4], port=int(cols[18]) if cols[18].isdigit() else 0,
        operational=int(cols[5]), admin=int(cols[6]), weight=int(cols[7]),
    )


def parse_servers_state(text: str) -> tuple[ServerState, ...]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].strip().isdigit():
        raise SocketError(f"unexpected `show servers state` answer: {text.strip()[:200]!r}")
    states = (_state_line(line.split()) for line in lines[1:] if not line.startswith("#"))
    return tuple(state for state in states if state is not None)


def filter_server_state(text: str, keep: Callable[[ServerState], bool]) -> str:
    """The saved state without the servers it must not speak for.

    A new worker applies a server's saved state over what the config says. For a slot the reload
    gives to another instance (or puts in maintenance), the old worker's state is wrong: without its
    line, the new worker takes the server as the config describes it.
    """
    kept = []
    for line in text.splitlines(keepends=True):
        state = None if line.startswith("#") or line.strip().isdigit() else _state_line(line.split())
        if state is None or keep(state):
            kept.append(line)
    return "".join(kept)


def runtime_commands(stats_socket: Path, commands: list[str] | tuple[str, ...], batch: int = 50) -> str:
    """Send Runtime API commands, several per connection (``;``-separated, run in order).

    HAProxy answers informational text even on success, so the caller verifies the outcome by
    reading the state back rather than by parsing these answers; they are returned for the logs.
    """
    answers = []
    for start in range(0, len(commands), batch):
        answers.append(socket_command(stats_socket, "; ".join(commands[start:start + batch])))
    return " | ".join(" ".join(a.split()) for a in answers if a.strip())


def servers_state(stats_socket: Path, backend: str | None = None) -> tuple[ServerState, ...]:
    command = f"show servers state {backend}" if backend else "show servers state"
    return parse_servers_state(socket_command(stats_socket, command))


def show_map(stats_socket: Path, map_path: Path) -> dict[str, str]:
    """The entries HAProxy runs for the map file ``map_path`` (``show map``)."""
    text = socket_command(stats_socket, f"show map {map_path}")
    if text.lstrip().startswith(("Unknown map", "Missing map")):
        raise SocketError(f"HAProxy has no map {map_path}: {text.strip()[:120]}")
    entries: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("0x"):
            entries[parts[1]] = parts[2]
    return entries


def save_server_state(
    stats_socket: Path, state_file: Path, keep: Callable[[ServerState], bool] | None = None
) -> bool:
    """Write ``show servers state`` where ``load-server-state-from-file`` reads it after a reload.

    Returns False (and changes nothing) when the runtime socket cannot be read: a reload must not
    wait on it, it only loses health state that the new worker's checks rebuild.
    """
    try:
        text = socket_command(stats_socket, "show servers state")
        parse_servers_state(text)
    except SocketError:
        return False
    if keep is not None:
        text = filter_server_state(text, keep)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(state_file, text, mode=0o644)
    return True


# --- running HAProxy ourselves (sandbox, tests, benchmarks) ---


class HAProxyProcess:
    """A master-worker HAProxy started in the foreground, as the sandbox and tests run it."""

    def __init__(self, binary: str, config: Path, master_socket: Path, log_path: Path | None = None) -> None:
        self.binary = binary
        self.config = config
        self.master_socket = master_socket
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> ProcInfo:
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
                raise HAProxyError(f"HAProxy exited with {self.process.returncode} at start; see {self.log_path}")
            try:
                info = show_proc(self.master_socket)
                if info.current_worker:
                    return info
            except SocketError:
                pass
            time.sleep(0.05)
        self.stop()
        raise HAProxyError(f"HAProxy did not start a worker within {timeout:g}s")

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


def process_start_time(pid: int) -> float:
    """When ``pid`` started, as a Unix time precise to a clock tick.

    psutil derives this from the boot time in whole seconds, too coarse to tell whether a worker
    started before or after a file was written; the boot clock gives the boot time to the tick.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    boot_epoch = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return boot_epoch + start_ticks / os.sysconf("SC_CLK_TCK")


def find_binary(name: str) -> str | None:
    """``haproxy`` lives in /usr/sbin, which is not on a normal user's PATH on Debian."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
