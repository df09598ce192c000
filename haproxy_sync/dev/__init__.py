"""Stand-ins for what a production host provides, for the sandbox, the tests and the benchmarks.

* ``devconsul/``: an in-memory Consul HTTP API, a ``consul agent -dev`` stand-in
  (``haproxy-sync devconsul``, ``python -m haproxy_sync.dev.devconsul``);
* ``sandbox.py``: ``haproxy-sync dev``: devconsul, app instances, HAProxy and the daemon on 127.0.0.1;
* ``app.py``: one sandbox app instance (``python -m haproxy_sync.dev.app``).

The rule: nothing outside ``haproxy_sync/dev/`` imports it, except the ``dev`` and ``devconsul``
commands of ``haproxy_sync/cli.py``, and those lazily, inside the command functions. So a production
``haproxy-sync run`` never loads a stand-in; tests/unit/test_dev_isolation.py holds the product to it.
"""
