"""Records what haproxy-sync writes to HAProxy's sockets, in every process the integration tests start.

The integration tests put this directory on ``PYTHONPATH`` and name a file in
``HAPROXY_SYNC_AUDIT``; Python then imports this module at start-up (``site``), and every byte sent
on a unix stream socket (the admin and the master CLI) is appended to that file as it goes out.
Nothing is changed on the way: the real socket sends the same bytes. ``tests/audit/grammar.py``
reads the file after the test. Each config moved into place (``os.replace`` onto a ``*.cfg``) adds
its backend names to ``<file>.backends`` and its map files and crt-lists to ``<file>.maps``: what HAProxy may have
run during the test.
"""

from __future__ import annotations

import os
import re
import socket

_AUDIT = os.environ.get("HAPROXY_SYNC_AUDIT")

if _AUDIT:
    _sendall = socket.socket.sendall

    def _recording_sendall(self: socket.socket, data, *args):  # type: ignore[no-untyped-def]
        if self.family == socket.AF_UNIX and self.type == socket.SOCK_STREAM:
            fd = os.open(_AUDIT, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, bytes(data))
            finally:
                os.close(fd)
        return _sendall(self, data, *args)

    socket.socket.sendall = _recording_sendall  # type: ignore[method-assign]

    _replace = os.replace

    def _recording_replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        _replace(src, dst, *args, **kwargs)
        if str(dst).endswith(".cfg"):
            with open(dst, errors="replace") as handle:
                text = handle.read()
            names = re.findall(r"^backend (\S+)", text, re.MULTILINE)
            maps = set(re.findall(r"map_str\(([^),]+)\)", text)) | set(re.findall(r" crt-list (\S+)", text))
            with open(f"{_AUDIT}.backends", "a") as out:
                out.write("".join(f"{name}\n" for name in names))
            with open(f"{_AUDIT}.maps", "a") as out:
                out.write("".join(f"{path}\n" for path in sorted(maps)))

    os.replace = _recording_replace
