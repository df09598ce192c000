"""One instance HAProxy refuses costs that instance, never the rest (issue #14, isolation).

Every value from Consul passes the allowlists before a template sees it, but HAProxy can still refuse
the config it ends up in. The template here is one an operator might write: server IDs pinned to the
instance's port, so that stats keep their IDs across reloads. Then anyone who registers an instance on
a port already taken makes ``haproxy -c`` fail ("custom id already used"). The daemon must trace that to
the newcomer, leave it out with a reason, and keep applying every other change, of that service and of
others, with real HAProxy and devconsul.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import Stack, consul_put, register, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")

SERVER_LINE = "    server {{ server.name }} {{ server.endpoint }} check weight {{ server.weight }}"


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    default = Path(haproxy.__file__).parent / "templates" / "haproxy.cfg.j2"
    text = default.read_text()
    assert text.count(SERVER_LINE) == 1
    template = tmp_path / "pinned-ids.cfg.j2"
    pinned = SERVER_LINE + '{{ " id " ~ server.port if server.instance_id else "" }}'
    template.write_text(text.replace(SERVER_LINE, pinned))
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(2), exits, template=template, services=("cabify", "other"),
                    extra='reload_min_interval = "0s"\n')


def squatter(stack: Stack, port: int, instance_id: str = "squatter") -> None:
    """An instance on 127.0.0.2 (nothing listens there) claiming a port a real instance has."""
    consul_put(stack.consul.url, "/v1/agent/service/register",
               {"ID": instance_id, "Name": "cabify", "Address": "127.0.0.2", "Port": port})


def test_a_refused_instance_is_left_out_and_every_other_change_applies(stack: Stack, make_apps) -> None:
    taken = stack.apps[0].port
    squatter(stack, taken)
    stack.daemon.wait_for_log("isolation: 1 instances left out", timeout=20)
    log = stack.daemon.log()
    line = next(x for x in log.splitlines() if "HAProxy refuses the config with service cabify" in x)
    assert "instance squatter (node " in line and f"127.0.0.2:{taken}" in line and "already used" in line, line
    assert "left out of haproxy.cfg until its registration changes" in line
    live = stack.layout.haproxy_cfg.read_text()
    assert "127.0.0.2" not in live, "the refused instance is not in the live config"
    haproxy.validate(haproxy.find_binary("haproxy"), stack.layout.haproxy_cfg)
    wait_until(lambda: stack.metric('haproxy_sync_instances_skipped{reason="rejected",service="cabify"}') == 1, 5,
               what="the refused instance counted as skipped")
    assert stack.metric("haproxy_sync_instances_rejected_total") == 1

    # The same service and another one keep changing, applied as usual.
    newcomer, other = make_apps(1)[0], make_apps(1, prefix="other")[0]
    register(stack.consul.url, newcomer)
    register(stack.consul.url, other, service="other")
    apps = [*stack.apps, newcomer]
    wait_until(lambda: stack.serving(apps=apps) == {a.instance_id for a in apps}, 20, what="cabify's newcomer served")
    wait_until(lambda: stack.serving("other", apps=[other]) == {other.instance_id}, 20, what="other served")
    assert "127.0.0.2" not in stack.layout.haproxy_cfg.read_text()

    # Fixed at the source (a port of its own), it is checked again and taken.
    squatter(stack, 1 + max(a.port for a in apps))
    wait_until(lambda: "127.0.0.2" in stack.layout.haproxy_cfg.read_text(), 20, what="the fixed instance applied")
    wait_until(lambda: stack.metric('haproxy_sync_instances_skipped{reason="rejected",service="cabify"}') == 0, 5,
               what="nothing left out any more")
    assert stack.daemon.alive() and "Traceback" not in stack.daemon.log()


def test_two_squatters_at_once_are_both_found_and_the_good_change_beside_them_applies(
    stack: Stack, make_apps
) -> None:
    newcomer = make_apps(1)[0]
    register(stack.consul.url, newcomer)
    squatter(stack, stack.apps[0].port, "squatter-a")
    squatter(stack, stack.apps[1].port, "squatter-b")
    apps = [*stack.apps, newcomer]
    wait_until(lambda: stack.metric('haproxy_sync_instances_skipped{reason="rejected",service="cabify"}') == 2, 30,
               what="both squatters left out")
    wait_until(lambda: stack.serving(apps=apps) == {a.instance_id for a in apps}, 20, what="the good newcomer served")
    assert "127.0.0.2" not in stack.layout.haproxy_cfg.read_text()
    assert stack.daemon.alive() and "Traceback" not in stack.daemon.log()
