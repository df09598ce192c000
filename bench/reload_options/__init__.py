"""Reload-options benchmark: which soft-stop options make a master-worker reload cost nothing.

Why it exists: haproxy-sync applies structural changes with a master-worker ``reload``. Under
keep-alive load the old worker closes its idle keep-alive connections when it stops, and a client
that sent a request on such a connection at the same moment sees a reset. HAProxy 2.6 offers three
knobs for the soft stop — ``option idle-close-on-response``, ``close-spread-time`` and
``hard-stop-after`` — and the default template must carry only those that help. This package
measures them side by side, in one invocation, under the same load and the same reload schedule
(issue 4, point 5).

Run it from the repository root: ``.venv/bin/python -m bench.reload_options --help``.

Layout: :mod:`.config` (the variants and the config of the HAProxy under test), :mod:`.stack`
(bench/common's processes, and the ports they share), :mod:`.load` (wrk and the long-lived stream
clients), :mod:`.observe` (the reload schedule and the ``show proc`` sampler), :mod:`.runner` (one
measured run), :mod:`.report` (numbers, table, files); the backend pool and the aiohttp streaming
backend are bench/common's, shared with the churn benchmark.
"""
