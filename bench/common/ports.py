"""Free TCP ports on the loopback address, for the processes a benchmark starts."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct ports free on ``host`` right now: all are held open until all are chosen, so
    the kernel cannot hand out one twice."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
