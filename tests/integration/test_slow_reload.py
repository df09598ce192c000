"""Reloads judged by HAProxy's master, not by the clock: a worker slower to start than
``reload_timeout`` is waited for (one reload, no storm), and a reload that fails for HAProxy's own
file descriptor limit is told as such."""

from __future__ import annotations

import dataclasses
import re
import signal
import time
from contextlib import ExitStack
from pathlib import Path

from haproxy_sync.config import default_template_path
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import Stack

#: Map lines HAProxy loads at each start: about two seconds of parsing here, four times reload_timeout.
SLOW_MAP_LINES = 2_000_000


def slow_template(directory: Path) -> Path:
    """The built-in template with a big map in the http frontend: the master parses it at every start."""
    big_map = directory / "big.map"
    with big_map.open("w") as out:
        out.writelines(f"host{i}.example be{i % 97}\n" for i in range(SLOW_MAP_LINES))
    text = default_template_path().read_text()
    anchor = "frontend http\n"
    assert anchor in text, "the built-in template has no `frontend http` section to slow down"
    slow = f"{anchor}    http-request set-var(txn.slow) req.hdr(host),lower,map({big_map})\n"
    path = directory / "slow.cfg.j2"
    path.write_text(text.replace(anchor, slow, 1))
    return path


def test_a_worker_slower_than_reload_timeout_is_waited_for_not_reloaded_again(
        tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits, template=slow_template(tmp_path),
                      extra='reload_min_interval = "0s"\n[haproxy]\nreload_timeout = "0.5s"\n')
        before = stack.layout.reloads()
        stack.layout = dataclasses.replace(stack.layout, extra=stack.layout.extra + "maxconn = 2001\n")
        stack.layout.write()  # a settings change: a reload, which takes the master about 2 s
        stack.daemon.signal(signal.SIGHUP)
        stack.daemon.wait_for_log("reload not confirmed within 0.5s", timeout=20)
        log = stack.daemon.wait_for_log("(template or settings changed)", timeout=30)
        applied = [line for line in log.splitlines() if "(template or settings changed)" in line][-1]
        reloaded_ms = int(re.search(r"reloaded in (\d+) ms", applied).group(1))
        assert reloaded_ms > 500, f"the reload took {reloaded_ms} ms, not longer than reload_timeout: {applied}"
        time.sleep(3)  # a storm would reload again within this
        assert stack.layout.reloads() == before + 1, "one reload for one change"
        log = stack.daemon.log()
        assert "apply failed" not in log and "restored" not in log, log[-2000:]
        assert "maxconn 2001" in stack.layout.haproxy_cfg.read_text()
        assert stack.metric('haproxy_sync_reload_failures_total{kind="still_loading"}') == 0


def test_a_reload_refused_for_haproxys_own_descriptor_limit_is_told_as_such(
        tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits, extra='[haproxy]\nreload_timeout = "3s"\n')
        served = stack.serving()
        good = stack.layout.haproxy_cfg.read_text()
        # `haproxy -c` accepts it; HAProxy's start cannot get two million descriptors (fs.nr_open is 1 Mi)
        stack.layout = dataclasses.replace(stack.layout, extra=stack.layout.extra + "maxconn = 1000000\n")
        stack.layout.write()
        stack.daemon.signal(signal.SIGHUP)
        log = stack.daemon.wait_for_log("apply failed", timeout=30)
        failed = next(line for line in log.splitlines() if "apply failed" in line)
        assert "file descriptor limit" in failed and "LimitNOFILE" in failed, failed
        assert stack.metric('haproxy_sync_reload_failures_total{kind="fd_limit"}') >= 1
        assert stack.layout.haproxy_cfg.read_text() == good, "the last good config is back on disk"
        assert stack.serving() == served and stack.daemon.alive()
