"""The streaming backend: long responses that keep a connection busy for 10-30 s.

Used by bench/churn (its streaming scenario) and bench/reload_options (its long-lived scenario).

Why it exists: what a reload really costs is not the short requests (HAProxy hands those over
cleanly with ``idle-close-on-response``) but the long-lived ones: an old worker must live until its
last stream ends, so a reload per change piles up workers and memory. This server gives HAProxy such
connections: ``GET /stream?seconds=S`` answers 200 with a chunked body, one ``tick`` chunk every
0.5 s for S seconds (bounded to 120 s), then an ``end`` chunk; ``/health`` and every other path
answer ``ok`` at once (Consul's and HAProxy's checks).

aiohttp, one process, one loop: 20-odd concurrent streams cost it nothing. Run it as a script::

    python bench/common/streamer.py --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

TICK = 0.5
MAX_SECONDS = 120.0


async def stream(request: web.Request) -> web.StreamResponse:
    """Send ``tick`` every 0.5 s for ``?seconds=`` seconds, then ``end``; a client leaving ends it."""
    try:
        seconds = min(MAX_SECONDS, max(0.0, float(request.query.get("seconds", "10"))))
    except ValueError:
        raise web.HTTPBadRequest(text="seconds must be a number\n") from None
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        for _ in range(int(seconds / TICK)):
            await response.write(b"tick\n")
            await asyncio.sleep(TICK)
        await response.write(b"end\n")
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client (or HAProxy) left: the load generator records that, not the server's log
    return response


async def ok(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Streaming backend for the churn benchmark.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_get("/{tail:.*}", ok)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, shutdown_timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
