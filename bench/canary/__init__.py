"""Canary-share benchmark: the share of requests canaries get through a real HAProxy kept by haproxy-sync.

A service with ``canary_tag`` and ``canary_share`` in its ``[[services]]`` table gets HAProxy weights
(``haproxy_sync.canary.split``) that send the instances carrying the tag that share of the requests in
total. This benchmark runs devconsul, one responder per instance answering its own id, the real daemon
and a real master-worker HAProxy, then counts who answers each request over one keep-alive
connection: for 7 stable instances and 1 canary at each ``--shares`` share (each a config.toml edit and
a SIGHUP), 3 canaries at 10 %, and the canary promoted (its tag removed, 1/8 expected). It also
checks that HAProxy's master counted no reload and the client saw no failed request meanwhile.

See ``python -m bench.canary --help``. Not a test: nothing asserts.
"""
