"""Why a local port cannot be listened on, in the words an operator acts on.

A busy port and a privileged one are different problems with different fixes; both used to read
"in use" (or a traceback). Shared by ``haproxy-sync dev`` and ``haproxy-sync devconsul``.
"""

from __future__ import annotations

import errno
import socket


def bind_refusal(exc: OSError, host: str, port: int, flag: str) -> str:
    """One line for a failed bind of ``host:port``, naming the flag that chooses another."""
    where = f"port {port} on {host}"
    if exc.errno == errno.EADDRINUSE:
        return f"{where} is in use; stop what listens there or choose another with {flag}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"{where} needs privileges: ports below 1024 are for root (or CAP_NET_BIND_SERVICE); "
                f"choose one from 1024 up with {flag}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this host; choose another with {flag}"
    return f"cannot listen on {where}: {exc.strerror or exc}; choose another with {flag}"


def bind_problem(host: str, port: int, flag: str) -> str | None:
    """What stops a plain listener on ``host:port`` (no SO_REUSEPORT, which would share a busy port),
    or None when it can bind."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            return bind_refusal(exc, host, port, flag)
    return None
