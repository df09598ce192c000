"""devconsul: an in-process Consul HTTP API for the sandbox, the tests and the benchmarks.

Why it exists: no Consul binary can run on the machines this project is built and tested on, yet
haproxy-sync's whole job is to follow Consul. devconsul is a real HTTP server on a real port: a
``consul agent -dev`` stand-in, one agent that is its own server, with an in-memory catalog (its own
node, and external nodes registered through /v1/catalog/register) and a KV store.

It is written from Consul's documented HTTP API (agent/service, agent/check, health, catalog with
register/deregister and node, kv, status, blocking queries) and, where the docs leave it open, from
Consul's server code, not from what our client happens to need, so that

* the tests catch our client's mistakes: an empty ``Service.Address``, a ``null`` ``Meta``, an index
  that moves while the data does not (check output), an index that goes backwards or is 0, 403 /
  429 / 500 answers, connections that are refused or reset; and
* the clients people already use (py-consul, consul-template, Ansible's consul modules, curl
  recipes from Consul's docs) work against it as they would against a real agent.

The parts, bottom to top:

* ``records.py``: constants, the log line format, the immutable records (services,
  checks, nodes, KV entries);
* ``faults.py``: the faults it can play on demand;
* ``decode.py``: decoding of agent registration bodies (Consul accepts any key casing and snake_case),
  ``ConsulHTTPError``; ``registration.py``: decoding and validation of catalog register/deregister
  bodies;
* ``encode.py``: the JSON shapes Consul answers with;
* ``filter.py``: ``filter`` expressions as Consul evaluates them (go-bexpr v0.1.2, the version it
  pins), with its syntax in ``filter_syntax.py`` and RE2 patterns in ``filter_regexp.py``;
* ``acl.py``: the ACL system, pure: rules (service, node, agent, key, operator), tokens, ``AclConfig``
  and the ``Authorizer`` that decides what a request's token may read and write (Consul's
  longest-prefix / exact-match rules, an anonymous token, a default policy, key_write_prefix);
* ``store.py``: the state store: nodes, services, checks with Consul's raft-like indexes (per table,
  per service, per node, the last extinction of a service and of a node); ``kvstate.py``: the KV
  entries and tombstones it holds;
* ``http.py``: HTTP plumbing (read options, tokens, the listening socket, query parameters);
* the server, ``DevConsul`` in ``server.py``, composed of mixins (see ``base.py``): the listener and
  fault switch (``listening.py``), checks it really runs (``checks.py``) and the agent's sync of
  their results to the catalog, output-only changes after check_update_interval (``agentsync.py``),
  agent writes (``writes.py``), the request pipeline with blocking queries and the ACL wiring
  (``pipeline.py``) and the handlers of each endpoint group (``agent.py``, ``health.py``,
  ``catalog.py`` for catalog reads, ``catalog_writes.py`` for catalog register/deregister, ``kv.py``,
  ``tokens.py`` for /v1/acl/token/self, ``control.py``);
* ``thread.py``: ``DevConsulThread``, a thread wrapper for synchronous callers;
* ``cli.py``: ``run_forever`` and ``main`` for the command line (``python -m haproxy_sync.dev.devconsul``,
  whose ``--help`` explains the ACL options).

Its log lines go to the logger ``haproxy_sync.devconsul``.
"""

from __future__ import annotations

from haproxy_sync.dev.devconsul.acl import AclConfig, AclConfigError, AclToken, Rule, parse_rules
from haproxy_sync.dev.devconsul.cli import main, run_forever
from haproxy_sync.dev.devconsul.decode import ConsulHTTPError
from haproxy_sync.dev.devconsul.faults import FAULTS
from haproxy_sync.dev.devconsul.filter import FilterError, compile_filter
from haproxy_sync.dev.devconsul.records import CRITICAL, PASSING, WARNING
from haproxy_sync.dev.devconsul.server import DevConsul
from haproxy_sync.dev.devconsul.thread import DevConsulThread
from haproxy_sync.durations import format_go_duration, parse_go_duration

__all__ = [
    "CRITICAL",
    "FAULTS",
    "PASSING",
    "WARNING",
    "AclConfig",
    "AclConfigError",
    "AclToken",
    "ConsulHTTPError",
    "DevConsul",
    "DevConsulThread",
    "FilterError",
    "Rule",
    "compile_filter",
    "format_go_duration",
    "main",
    "parse_go_duration",
    "parse_rules",
    "run_forever",
]
