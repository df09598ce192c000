"""Everything that touches HAProxy's files and sockets: validation, the atomic swap, the CLI exchange and the
Runtime API (the master and its reloads are ``master.py``).

All functions here block (subprocesses, unix sockets, fsync); the daemon calls them through
``asyncio.to_thread`` so the event loop never waits on disk or HAProxy.

The file rules, which keep the live ``haproxy.cfg`` always the last good one:

* a candidate is written to a temp file in the same directory, checked with ``haproxy -c``, fsynced,
  and renamed over the live file, then the directory is fsynced; a crash at any point leaves either
  the old or the new complete file;
* ``<config>.last-good`` is a copy of the config HAProxy last confirmed running (a new worker after a
  reload); a reload that HAProxy rejects puts that copy back, so disk keeps matching what runs;
* nothing is written or read through a symbolic link: temp files get an unpredictable name created
  with O_EXCL|O_NOFOLLOW, a target that is a link is refused, and files haproxy-sync owns are read
  with O_NOFOLLOW. Whoever can plant a link in these directories must not redirect a root write.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import grp
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from haproxy_sync import commands, rules
from haproxy_sync.commands import Command, Payload


class HAProxyError(Exception):
    """Validation, write or reload of HAProxy failed; the message says what and where."""


class ValidationError(HAProxyError):
    """``haproxy -c`` rejected a config; ``details`` holds HAProxy's own output, ``summary`` its first
    alerts (what a log line about one server quotes)."""

    def __init__(self, message: str, details: str = "", summary: str = "") -> None:
        super().__init__(message)
        self.details = details
        self.summary = summary or message


class SocketError(HAProxyError):
    """A CLI socket could not be reached or did not answer."""


# --- validation and the atomic swap ---


def validate(binary: str, path: Path, timeout: float = 30.0) -> None:
    """Run ``haproxy -c -f path``; raise :class:`ValidationError` with HAProxy's alerts when it fails.

    ``binary`` is found the way every command finds it (:func:`find_binary`), so ``check`` and
    ``run`` can never disagree about which HAProxy checks the config.
    """
    found = find_binary(binary)
    try:
        if found is None:
            raise FileNotFoundError(binary)
        result = subprocess.run(
            [found, "-c", "-f", str(path)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise ValidationError(f"haproxy binary {binary!r} not found ({BINARY_SEARCH}); install HAProxy or set "
                              "haproxy.binary") from None
    except subprocess.TimeoutExpired:
        raise ValidationError(f"`{binary} -c` on {path} took longer than {timeout:g}s") from None
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        alerts = [_strip_pid(line) for line in output.splitlines() if "ALERT" in line]
        summary = "; ".join(alerts[:3]) or (output.splitlines() or ["no output"])[-1]
        raise ValidationError(f"haproxy -c rejected {path}: {summary}", output, summary)


@dataclass(frozen=True)
class Features:
    """What the HAProxy binary can do that the template and the daemon use, told by ``haproxy -v``."""

    version: tuple[int, int, int] | None = None  # None: the binary did not say (or is missing)

    @property
    def stats_file(self) -> bool:
        """``stats-file`` and ``dump stats-file`` (3.0): counters preloaded across a reload."""
        return self.version is not None and self.version >= (3, 0, 0)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version)) if self.version else "unknown"


_VERSION_LINE = re.compile(r"HA-?Proxy version ([0-9]{1,3})\.([0-9]{1,3})(?:\.([0-9]{1,4}))?", re.ASCII)


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``HAProxy version 3.0.11-9e587df 2025/06/02 ...`` -> (3, 0, 11); None when no such line."""
    match = _VERSION_LINE.search(text[:4096])
    return (int(match[1]), int(match[2]), int(match[3] or 0)) if match else None


@functools.lru_cache(maxsize=8)
def _features(binary: str, _identity: tuple[int, int]) -> Features:
    try:
        result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return Features()
    return Features(parse_version(result.stdout + result.stderr))


def features(binary: str) -> Features:
    """The features of ``binary`` (a name on PATH or a path); asked again when the file changes (an upgrade)."""
    found = find_binary(binary)
    if found is None:
        return Features()
    try:
        info = os.stat(found)
    except OSError:
        return Features()
    return _features(found, (info.st_mtime_ns, info.st_size))


def _strip_pid(line: str) -> str:
    return re.sub(r"^\[ALERT\]\s*\(\d+\)\s*:\s*", "", line.strip())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_text(path: Path) -> str | None:
    """The text of a file haproxy-sync owns, None when there is none.

    Opened with O_NOFOLLOW: a link planted at the live config or its ``.last-good`` copy must not make
    the daemon restore (or compare against) a file of someone else's choosing.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HAProxyError(symlink_refusal(path) or f"{path} is a symbolic link; remove it") from None
        raise HAProxyError(f"cannot read {path}: {exc.strerror or exc}") from None
    # Not UTF-8 (a hand edit, a disk error): read anyway, so that it compares unequal and is rewritten.
    try:
        with os.fdopen(fd, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError as exc:
        raise HAProxyError(f"cannot read {path}: {exc.strerror or exc}") from None


def last_good_path(path: Path) -> Path:
    return path.with_name(path.name + ".last-good")


def running_claim_path(server_state_file: Path) -> Path:
    """Which worker runs the live config (:mod:`running_claim`): in the state directory, beside the
    server state, writable by the daemon under its unit."""
    return server_state_file.parent / "haproxy-sync.running"


def atomic_write(
    path: Path,
    text: str,
    *,
    binary: str | None = None,
    mode: int | None = None,
    group: str = "",
    setting: str = "",
) -> None:
    """Replace ``path`` with ``text`` so that readers only ever see a whole old or whole new file.

    When ``binary`` is given the candidate must pass ``haproxy -c`` before it replaces anything.
    ``mode`` and ``group`` set the new file's permissions; without them it keeps those of the file it
    replaces (an operator's ``root:haproxy 0640`` survives), or 0640 when there is none. ``setting``
    names the setting that chose ``path``, for the message that refuses a symbolic link there.

    The temp file is made by :func:`tempfile.mkstemp` (O_CREAT|O_EXCL|O_NOFOLLOW, a random name), so
    a link planted at a guessable name is never written through, and it is removed on every error.
    """
    refusal = symlink_refusal(path, setting)
    if refusal:
        raise HAProxyError(refusal)
    directory = path.parent
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(path))
    except OSError as exc:
        raise HAProxyError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp = Path(name)
    replaced = False
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            _set_ownership(path, handle.fileno(), mode, group)
            os.fsync(handle.fileno())
        if binary is not None:
            validate(binary, tmp)
        os.replace(tmp, path)
        replaced = True
        _fsync_dir(directory)
    except OSError as exc:
        raise HAProxyError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if not replaced:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _temp_prefix(path: Path) -> str:
    """``.NAME.tmp-PID-``: the writer's PID tells a dead writer's leftovers from a live one's."""
    return f".{path.name}.tmp-{os.getpid()}-"


def _set_ownership(source: Path, fd: int, mode: int | None, group: str) -> None:
    """Give the temp file (by descriptor: its name could be swapped) the permissions of ``source``.

    ``source`` is looked at with lstat and only a regular file counts: a link (mode 0777) or a fifo
    planted there must not lend its permissions to the new config.
    """
    try:
        st: os.stat_result | None = os.lstat(source)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        st = None
    os.fchmod(fd, mode if mode is not None else (st.st_mode & 0o7777 if st else 0o640))
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise HAProxyError(f"group {group!r} does not exist; set haproxy.config_group to one that does") from None
        os.fchown(fd, -1, gid)
    elif st is not None and os.geteuid() == 0:
        os.fchown(fd, st.st_uid, st.st_gid)


def remove_stale_temp_files(*paths: Path) -> list[Path]:
    """Temp files a killed writer left beside ``paths`` (``.NAME.tmp-PID[-random]`` of a PID that is gone).

    Entries are only unlinked, never opened, so a link among them is removed without being followed.
    Whatever cannot be removed (a read-only or foreign directory, a directory of that name) is
    skipped: leftovers must not keep the daemon from starting.
    """
    removed: list[Path] = []
    for path in paths:
        removed.extend(_remove_stale_beside(path))
    return removed


def _remove_stale_beside(path: Path) -> list[Path]:
    prefix = f".{path.name}.tmp-"
    try:
        entries = [entry.name for entry in os.scandir(path.parent) if entry.name.startswith(prefix)]
    except OSError:
        return []
    removed = []
    for name in entries:
        pid = name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        candidate = path.parent / name
        try:
            candidate.unlink()
        except OSError:
            continue
        removed.append(candidate)
    return removed


class FileSettings(Protocol):
    """The paths of :class:`haproxy_sync.config.HAProxySettings` that name files haproxy-sync replaces."""

    @property
    def config_path(self) -> Path: ...

    @property
    def routes_map_path(self) -> Path: ...

    @property
    def server_state_file(self) -> Path: ...

    @property
    def stats_file_path(self) -> Path: ...


def owned_files(hap: FileSettings) -> dict[Path, str]:
    """Every file haproxy-sync replaces, with the setting an operator changes to move it."""
    return {
        hap.config_path: "haproxy.config_path",
        last_good_path(hap.config_path): "haproxy.config_path",
        hap.routes_map_path: "haproxy.routes_map",
        hap.server_state_file: "haproxy.server_state_file",
        running_claim_path(hap.server_state_file): "haproxy.server_state_file",
        hap.stats_file_path: "haproxy.stats_file",
    }


def symlink_refusal(path: Path, setting: str = "") -> str | None:
    """The one line that refuses ``path`` when it is a symbolic link, else None.

    Only the last component counts: a linked parent directory (``/etc/haproxy -> /srv/haproxy``) is
    fine, a linked file is not, since a rename would replace the link rather than write its target.
    """
    try:
        target = os.readlink(path)
    except OSError:
        return None  # not a link, not there, or not ours to look at: the write itself will say
    shown = "".join(ch if ch.isprintable() else "?" for ch in target)
    if path.name.endswith(".last-good"):
        advice = f"remove the link (it is haproxy-sync's own copy of {setting or 'the config'})"
    else:
        advice = f"point {setting or 'the setting that names it'} at the real file"
    return (f"{path} is a symbolic link (to {shown}); haproxy-sync replaces files atomically and "
            f"will not write through links: {advice}")


def refuse_symlinks(paths: Mapping[Path, str]) -> list[str]:
    """One problem per path (mapped to the setting that names it) that is a symbolic link.

    Keyed by path, not setting: the config and its ``.last-good`` copy share one setting.
    """
    return [refusal for path, setting in paths.items() if (refusal := symlink_refusal(path, setting))]


def remember_last_good(path: Path) -> None:
    """Copy the live config aside as the one HAProxy is confirmed to run."""
    text = read_text(path)
    if text is not None and read_text(last_good_path(path)) != text:
        atomic_write(last_good_path(path), text, setting="haproxy.config_path")


def restore_last_good(path: Path) -> bool:
    """Put the last confirmed config back in place; False when there is none to restore."""
    text = read_text(last_good_path(path))
    if text is None:
        return False
    atomic_write(path, text, setting="haproxy.config_path")
    return True


# --- the CLI sockets ---


#: The most a CLI answer may hold (``show servers state`` of 16,384 servers is about 4 MiB).
MAX_ANSWER_BYTES = 64 << 20


def socket_payload(path: Path, command: Command, payload: Payload, timeout: float = 5.0) -> str:
    """Send one command that ends in ``<<`` and its payload (ended by the empty line HAProxy expects)."""
    if not (isinstance(command, Command) and command.endswith(" <<") and isinstance(payload, Payload)):
        raise TypeError("socket_payload sends only a `... <<` Command and a Payload built by haproxy_sync.commands")
    return _exchange(path, f"{command}\n{payload}\n".encode(), command.verb, timeout)


def socket_command(path: Path, command: Command | tuple[Command, ...], timeout: float = 5.0) -> str:
    """Send one command (or several, run in order) to a HAProxy CLI socket and return the whole answer.

    Only :class:`~haproxy_sync.commands.Command` values are sent: each is exactly one command of
    the grammar, so the ``;`` that joins several here is the only separator on the line.
    """
    batch = command if isinstance(command, tuple) else (command,)
    if not batch or not all(isinstance(c, Command) for c in batch):
        raise TypeError("socket_command sends only Command values built by haproxy_sync.commands")
    if any(c.endswith(" <<") for c in batch):
        raise TypeError("a command with a payload goes through socket_payload")
    return _exchange(path, "; ".join(batch).encode() + b"\n", batch[0].verb, timeout)


def _exchange(path: Path, request: bytes, verb: str, timeout: float) -> str:
    """One non-interactive exchange on a CLI socket: ``request`` sent, the whole answer read (bounded)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout  # for the whole exchange: an answer that drips is cut off too
    chunks: list[bytes] = []
    size = 0
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)  # non-interactive mode: HAProxy answers, then closes
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise SocketError(f"HAProxy socket {path} answered {verb!r} with more than "
                                  f"{MAX_ANSWER_BYTES // (1 << 20)} MiB; not read further")
            chunks.append(chunk)
    except FileNotFoundError:
        raise SocketError(f"HAProxy socket {path} does not exist (is HAProxy running?)") from None
    except ConnectionRefusedError:
        raise SocketError(f"HAProxy socket {path} refused the connection (is HAProxy running?)") from None
    except PermissionError:
        raise SocketError(f"permission denied on HAProxy socket {path}; check its mode and group") from None
    except TimeoutError:
        raise SocketError(f"HAProxy socket {path} did not finish answering {verb!r} within {timeout:g}s "
                          f"({size} bytes came)") from None
    except OSError as exc:
        raise SocketError(f"HAProxy socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    return b"".join(chunks).decode(errors="replace")


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


#: A numeric column of ``show servers state``: ASCII digits only (``int()`` also takes '٢', '+7', ' 7').
DIGITS = re.compile(r"[0-9]{1,10}", re.ASCII)
#: A line of that answer as HAProxy writes it: printable ASCII, fields apart by spaces or tabs.
PRINTABLE_LINE = re.compile(r"[\x20-\x7e\t]*", re.ASCII)
#: The columns read (be_id .. srv_port); HAProxy writes more, and newer versions may add some at the end.
_STATE_COLUMNS = 19
_STATE_NUMERIC = (5, 6, 7, 18)  # srv_op_state, srv_admin_state, srv_uweight, srv_port (0 when none)


def _state_line(line: str) -> ServerState | None:
    """One server line of ``show servers state``; None for a server that is not ours (a backend or
    server name haproxy-sync never renders). Raises :class:`SocketError` naming a line that does not
    parse: the answer is untrusted, and nothing in it is converted before it passed its allowlist."""
    cols = line.split() if PRINTABLE_LINE.fullmatch(line) else []
    if len(cols) < _STATE_COLUMNS or not all(DIGITS.fullmatch(cols[i]) for i in _STATE_NUMERIC):
        raise SocketError(f"unexpected `show servers state` answer: cannot read server line {line[:120]!r}")
    if not (rules.is_name(cols[1]) and rules.is_name(cols[3])):
        return None
    return ServerState(
        backend=cols[1], name=cols[3], address=cols[4], port=int(cols[18]),
        operational=int(cols[5]), admin=int(cols[6]), weight=int(cols[7]),
    )


def data_lines(text: str) -> list[str]:
    """The lines of a CLI answer that hold anything, split on ``\\n`` only (as HAProxy reads its files)."""
    return [line for line in text.split("\n") if line.strip(" \t")]


def parse_servers_state(text: str) -> tuple[ServerState, ...]:
    """Every server of a ``show servers state`` answer, or :class:`SocketError` for the whole answer.

    The first line is the format version; ``#`` lines are comments. One server line that does not
    parse makes the whole answer unusable: a half-read state must not drive repairs or reloads.
    Lines are split on ``\\n`` only, as HAProxy reads its state file.
    """
    lines = data_lines(text)
    if not lines or not DIGITS.fullmatch(lines[0].strip(" \t")):
        raise SocketError(f"unexpected `show servers state` answer: {text.strip()[:200]!r}")
    states = (_state_line(line) for line in lines[1:] if not line.startswith("#"))
    return tuple(state for state in states if state is not None)


def filter_server_state(text: str, keep: Callable[[ServerState], bool]) -> str:
    """The saved state without the servers it must not speak for.

    A new worker applies a server's saved state over what the config says. For a slot the reload
    gives to another instance (or puts in maintenance), the old worker's state is wrong: without its
    line, the new worker takes the server as the config describes it.

    Only what parses is written (HAProxy loads this file): the version line, comment lines of plain
    text, and server lines of ours that ``keep`` accepts. A line that does not parse is dropped.
    """
    lines = data_lines(text)
    if not lines or not DIGITS.fullmatch(lines[0].strip(" \t")):
        return ""
    kept = [lines[0].strip(" \t")]
    for line in lines[1:]:
        if line.startswith("#"):
            if PRINTABLE_LINE.fullmatch(line):
                kept.append(line)
            continue
        try:
            state = _state_line(line)
        except SocketError:
            continue
        if state is not None and keep(state):
            kept.append(line)
    return "".join(f"{line}\n" for line in kept)


def runtime_commands(stats_socket: Path, sequence: list[Command] | tuple[Command, ...], batch: int = 50) -> str:
    """Send Runtime API commands, several per connection (``;``-separated, run in order).

    HAProxy answers informational text even on success, so the caller verifies the outcome by
    reading the state back rather than by parsing these answers; they are returned for the logs.
    """
    answers = []
    for start in range(0, len(sequence), batch):
        answers.append(socket_command(stats_socket, tuple(sequence[start:start + batch])))
    return " | ".join(" ".join(a.split()) for a in answers if a.strip())


def servers_state(stats_socket: Path, backend: str | None = None) -> tuple[ServerState, ...]:
    return parse_servers_state(socket_command(stats_socket, commands.show_servers_state(backend)))


def show_map(stats_socket: Path, map_path: Path) -> dict[str, str]:
    """The entries HAProxy runs for the map file ``map_path`` (``show map``).

    The answer is read like any other untrusted text: an entry whose key or backend is not of its
    kind is left out, so it can never become part of a command.
    """
    text = socket_command(stats_socket, commands.show_map(str(map_path)))
    if text.lstrip().startswith(("Unknown map", "Missing map")):
        raise SocketError(f"HAProxy has no map {map_path}: {text.strip()[:120]}")
    entries: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("0x"):
            with contextlib.suppress(rules.Refused):
                entries[rules.map_key(parts[1])] = rules.name(parts[2])
    return entries


def save_server_state(
    stats_socket: Path, state_file: Path, keep: Callable[[ServerState], bool] | None = None
) -> bool:
    """Write ``show servers state`` where ``load-server-state-from-file`` reads it after a reload.

    Returns False (and changes nothing) when the runtime socket cannot be read: a reload must not
    wait on it, it only loses health state that the new worker's checks rebuild.
    """
    try:
        text = socket_command(stats_socket, commands.show_servers_state())
        parse_servers_state(text)
    except SocketError:
        return False
    if keep is not None:
        text = filter_server_state(text, keep)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(state_file, text, mode=0o644, setting="haproxy.server_state_file")
    return True


#: Where :func:`find_binary` looks, for the error that says it found nothing.
BINARY_SEARCH = "looked on PATH, then in /usr/sbin and /usr/local/sbin"


def find_binary(name: str) -> str | None:
    """``haproxy`` lives in /usr/sbin, which is not on a normal user's PATH on Debian."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
