"""Soak benchmark for haproxy-sync: the daemon under hours of Consul churn, watched for leaks.

Run from the repository root with ``.venv/bin/python -m bench.soak --help``. It is a benchmark, not
a test: pytest never collects it (its files are not ``test_*`` and live outside ``tests/``).

Why a separate package from ``bench/churn``: the churn benchmark measures what a change costs the
traffic (failed requests, latency); this one measures what hours of changes cost the daemon itself
(memory, file descriptors, threads). They share only bench/common's stack and report writer, so
either scenario can change on its own.
"""
