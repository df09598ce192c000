"""Command line: ``python -m haproxy_sync.dev.devconsul`` and ``run_forever`` (``haproxy-sync devconsul``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from haproxy_sync.dev.devconsul.records import _log
from haproxy_sync.dev.devconsul.server import DevConsul


def _ensure_stderr_logging() -> None:
    """Make sure INFO lines reach stderr when nobody configured logging (python -m, the sandbox)."""
    if not _log.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _log.addHandler(handler)
    if _log.getEffectiveLevel() > logging.INFO:
        _log.setLevel(logging.INFO)


async def _serve_until_signal(host: str, port: int, token: str | None) -> None:
    server = DevConsul(host, port, token=token)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    _log.info("devconsul listening on %s", server.url)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await server.stop()


def run_forever(host: str, port: int, *, token: str | None = None) -> None:
    """Serve until SIGINT/SIGTERM; logs one line 'devconsul listening on http://...' to stderr."""
    _ensure_stderr_logging()
    asyncio.run(_serve_until_signal(host, port, token))


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m haproxy_sync.dev.devconsul [--host H] [--port P]`; the token comes from DEVCONSUL_TOKEN."""
    parser = argparse.ArgumentParser(prog="devconsul", description="A Consul HTTP API for development.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    args = parser.parse_args(argv)
    run_forever(args.host, args.port, token=os.environ.get("DEVCONSUL_TOKEN") or None)
