"""The churn benchmark: what a stream of Consul changes costs HAProxy's clients, per way of syncing.

Not a test (pytest never collects ``bench/``): a measurement, run by hand with
``.venv/bin/python -m bench.churn`` from the repository root (``--help`` for the flags). It puts the
real consul-template, haproxy-sync with reloads only, and haproxy-sync with the Runtime API side by
side against the same seeded sequence of changes under the same keep-alive load, and writes
``bench/results/churn.{json,md,png}``. docs/benchmarks.md, "Churn", says what it measures and why.

Modules: :mod:`changes` (the seeded sequence, pure), :mod:`blocks` (the interleaved quiet and churn
blocks and the paired throughput statistics, pure), :mod:`observe` (convergence, workers, RSS, read
from HAProxy itself; CPU per process), :mod:`runner` (one run, on bench/common's stack), :mod:`report`
(numbers, table, JSON, PNG); ``loadgen.py`` is a standalone script run as its own process, as is
bench/common's ``streamer.py``.
"""
