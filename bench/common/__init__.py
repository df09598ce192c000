"""What the benchmarks share: the one stack, the one reader of /metrics and the one report writer.

A benchmark keeps its scenario and its report; everything else lives here once, one job a module:

* :mod:`.ports`: free loopback ports;
* :mod:`.process`: child processes in their own sessions, bounded waits, the stack's error;
* :mod:`.consul`: devconsul as a process, and the one client of its HTTP API;
* :mod:`.backends`: the backend pool (a second HAProxy answering 200) and the streaming backend;
* :mod:`.under_test`: the HAProxy under test, which binary it is, and what its config holds;
* :mod:`.syncers`: haproxy-sync (its config.toml written by ``haproxy_sync.dev.workdir.Workdir``) and
  consul-template as processes, with the one reload command consul-template runs;
* :mod:`.catalog`: the tagged catalog of N services x M instances that bench/scale and
  bench/exporter_series both build;
* :mod:`.metrics`: haproxy-sync's /metrics, read by prometheus_client's parser;
* :mod:`.report`: JSON, markdown and PNG files written atomically, and what every report says about
  the code and the machine it measured.

A benchmark imports only from here and public ``haproxy_sync`` names, never another benchmark.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
