"""One daemon per set of files: an exclusive ``flock`` on a file beside the live haproxy.cfg.

Two daemons writing the same haproxy.cfg (a second ``haproxy-sync run`` by hand, a unit started
twice under two names) would undo each other's slot tables and reload in turns. The lock is held
for the life of the process, released by the kernel when it exits however it exits (no stale lock
to clean up after a SIGKILL). The holder's PID, for the refusal, comes from the kernel (/proc/locks).
Where the directory is read-only for now (a fault the daemon rides out), the lock is taken on the
directory itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

_PID = re.compile(r"[0-9]{1,10}", re.ASCII)


class LockHeld(Exception):
    """Another process holds the lock (or it cannot be taken); the message says which and what to do."""


def lock_path(config_path: Path) -> Path:
    """``/etc/haproxy/.haproxy.cfg.haproxy-sync.lock`` for ``/etc/haproxy/haproxy.cfg``."""
    return config_path.with_name(f".{config_path.name}.haproxy-sync.lock")


def _holder(fd: int) -> str:
    """The PID holding a flock on ``fd``'s file, from the kernel's /proc/locks; "unknown" if none is found."""
    info = os.fstat(fd)
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 30804 fe:00:246947 0 EOF"
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and _PID.fullmatch(fields[4]):
                return fields[4]
    return "unknown"


def _open(path: Path) -> int:
    """The lock file; on a directory haproxy-sync cannot write in (read-only for now), the directory."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    with contextlib.suppress(OSError):
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)  # left by an earlier start
    return os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@contextlib.contextmanager
def held(config_path: Path) -> Iterator[Path]:
    """Hold the lock of ``config_path`` for the ``with`` block; raises :class:`LockHeld`."""
    path = lock_path(config_path)
    try:
        fd = _open(path)
    except OSError as exc:
        raise LockHeld(f"cannot open the lock file {path}: {exc.strerror or exc}; haproxy-sync needs the directory "
                       f"{path.parent} (of haproxy.config_path)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"another haproxy-sync (pid {_holder(fd)}) already manages {config_path} (lock {path}); "
                           "stop it first, or give this one other files") from None
        yield path
    finally:
        os.close(fd)
