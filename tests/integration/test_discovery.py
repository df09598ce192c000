"""Discovery by tag and routing through the map file, against real HAProxy, devconsul and the daemon.

The daemon's config names only `cabify`; every other service here is found by its tag and routed by
the meta of its instances, with no change to the daemon's config file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import App, Stack, cli, consul_put, http_get, operator_command, register, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")
TAG = "haproxy-sync"
FAST = 'drain_timeout = "1s"\nreconcile_interval = "300ms"\nreload_min_interval = "200ms"\n'


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(2), exits, extra=FAST)


def answer(stack: Stack, host: str, path: str = "/") -> str:
    """Which instance answers a request for ``host`` and ``path`` (the apps answer their own id)."""
    status, body = http_get(stack.layout.url(path), headers={"Host": host})
    return body.strip() if status == 200 else f"HTTP {status}"


def routes(stack: Stack) -> dict[str, str]:
    return haproxy.show_map(stack.layout.stats_socket, stack.layout.root / "routes.map")


def register_branch(stack: Stack, app: App, service: str, **meta: str) -> None:
    register(stack.consul.url, app, service=service, Tags=[TAG], Meta=meta)


def test_tagged_service_is_routed_by_host_and_follows_its_meta(stack: Stack, make_apps) -> None:
    config_before = stack.layout.config_toml.read_text()
    reloads = stack.layout.reloads()
    app = make_apps(1, prefix="feature-x")[0]

    register_branch(stack, app, "cabify-feature-x", **{"haproxy-sync-host": "feature-x.cabify.test"})
    wait_until(lambda: answer(stack, "feature-x.cabify.test") == app.instance_id, 10,
               what="the tagged service answering on its host")
    assert answer(stack, "other.cabify.test") in {"cabify-1", "cabify-2"}, "other hosts keep the default backend"
    assert answer(stack, "FEATURE-X.cabify.test:80") == app.instance_id, "Host is matched without case or port"
    assert stack.layout.reloads() == reloads + 1, "a new backend costs one reload"
    assert routes(stack) == {"feature-x.cabify.test": "cabify-feature-x"}
    assert "feature-x.cabify.test cabify-feature-x" in (stack.layout.root / "routes.map").read_text()
    assert stack.layout.config_toml.read_text() == config_before, "the daemon's own config is untouched"

    # The meta moves the service under a path prefix: a map change at runtime, no reload.
    reloads = stack.layout.reloads()
    register_branch(stack, app, "cabify-feature-x",
                    **{"haproxy-sync-host": "feature-x.cabify.test", "haproxy-sync-path": "/api"})
    # The host's other paths keep going to the default backend through a host entry of its own, so no
    # route on a path of any host can take them (docs/security.md).
    wait_until(lambda: routes(stack) == {"feature-x.cabify.test/api": "cabify-feature-x",
                                         "feature-x.cabify.test": "cabify"}, 10,
               what="the route moved to /api in HAProxy's map")
    assert answer(stack, "feature-x.cabify.test", "/api/orders") == app.instance_id
    assert answer(stack, "feature-x.cabify.test", "/apix") in {"cabify-1", "cabify-2"}, "whole segments only"
    assert answer(stack, "feature-x.cabify.test", "/") in {"cabify-1", "cabify-2"}
    assert stack.layout.reloads() == reloads, "a route change to an existing backend is a runtime change"
    wait_until(lambda: "feature-x.cabify.test/api cabify-feature-x" in (stack.layout.root / "routes.map").read_text(),
               5, what="the map file on disk following what HAProxy runs (with the config, within a second)")

    # The service goes away: its route goes with it.
    consul_put(stack.consul.url, f"/v1/agent/service/deregister/{app.instance_id}")
    wait_until(lambda: routes(stack) == {}, 10, what="the route removed")
    assert answer(stack, "feature-x.cabify.test", "/api/orders") in {"cabify-1", "cabify-2"}
    assert "Traceback" not in stack.daemon.log()


def test_invalid_meta_is_skipped_with_a_reason_and_the_rest_still_routes(stack: Stack, make_apps) -> None:
    bad, good = make_apps(2, prefix="branch")
    register_branch(stack, bad, "cabify-bad", **{"haproxy-sync-host": "evil.test\n    use_backend x"})
    register_branch(stack, good, "cabify-good", **{"haproxy-sync-host": "good.cabify.test"})
    wait_until(lambda: answer(stack, "good.cabify.test") == good.instance_id, 10, what="the good service routed")
    log = stack.daemon.wait_for_log("service cabify-bad is not routed")
    assert "haproxy-sync-host" in log and "not a valid host name" in log
    assert "backend cabify-bad" not in stack.layout.haproxy_cfg.read_text()
    assert "evil" not in stack.layout.haproxy_cfg.read_text() + (stack.layout.root / "routes.map").read_text()
    status, body = http_get(f"http://127.0.0.1:{stack.layout.metrics_port}/metrics")
    assert status == 200 and "haproxy_sync_services_unrouted 1.0" in body
    assert 'haproxy_sync_services_routed{origin="discovered"} 1.0' in body


def test_route_removed_by_hand_is_put_back(stack: Stack, make_apps) -> None:
    app = make_apps(1, prefix="hand")[0]
    register_branch(stack, app, "cabify-hand", **{"haproxy-sync-host": "hand.cabify.test"})
    wait_until(lambda: answer(stack, "hand.cabify.test") == app.instance_id, 10, what="routed")
    operator_command(stack.layout.stats_socket, f"del map {stack.layout.root / 'routes.map'} hand.cabify.test")
    assert answer(stack, "hand.cabify.test") != app.instance_id
    wait_until(lambda: answer(stack, "hand.cabify.test") == app.instance_id, 10, what="the reconcile's repair")
    stack.daemon.wait_for_log("route hand.cabify.test runs nothing, planned cabify-hand")


def test_render_and_status_see_discovered_services(stack: Stack, make_apps) -> None:
    app = make_apps(1, prefix="seen")[0]
    register_branch(stack, app, "cabify-seen", **{"haproxy-sync-host": "seen.cabify.test"})
    wait_until(lambda: answer(stack, "seen.cabify.test") == app.instance_id, 10, what="routed")
    config = str(stack.layout.config_toml)
    rendered = cli("render", "--dry-run", "--config", config)
    assert rendered.returncode == 0, rendered.stderr
    assert "backend cabify-seen" in rendered.stdout and "routed from seen.cabify.test/" in rendered.stdout
    assert rendered.stdout == stack.layout.haproxy_cfg.read_text(), "one read renders what the daemon runs"
    status = cli("status", "--config", config)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "cabify-seen" in status.stdout and "routes: 1, in step" in status.stdout
    plan = cli("render", "--plan", "--config", config)
    assert plan.returncode == 0 and plan.stdout.startswith("no change"), plan.stdout


def test_discovery_off_ignores_tags(tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(1), exits, extra=FAST + "[discovery]\nenabled = false\n")
        app = make_apps(1, prefix="ignored")[0]
        register_branch(stack, app, "cabify-ignored", **{"haproxy-sync-host": "ignored.cabify.test"})
        rendered = cli("render", "--dry-run", "--config", str(stack.layout.config_toml))
        assert rendered.returncode == 0 and "cabify-ignored" not in rendered.stdout


def test_consul_filter_expression_narrows_a_configured_service(tmp_path: Path, consul: DevConsulThread,
                                                               make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits, extra=FAST,
                      service_options="filter = 'Service.Meta.track != \"canary\"'\n")
        canary = make_apps(1, prefix="canary")[0]
        register(consul.url, canary, Meta={"track": "canary"})
        stable = make_apps(1, prefix="stable")[0]
        register(consul.url, stable, Meta={"track": "stable"})
        apps = [*stack.apps, canary, stable]
        wait_until(lambda: stack.serving(apps=apps) == {"cabify-1", "cabify-2", "stable-4"}, 10,
                   what="the filtered service's servers")
        assert "canary" not in stack.layout.haproxy_cfg.read_text()


def _bulk(stack: Stack, what: str, body: object) -> None:
    consul_put(stack.consul.url, f"/v1/devconsul/bulk/{what}", body)


def _four_branches(stack: Stack, make_apps) -> list[App]:
    """Four tagged services, one instance each, registered in one catalog write and all routed."""
    apps = make_apps(4, prefix="branch")
    _bulk(stack, "register", [
        {"ID": app.instance_id, "Name": f"svc-{app.instance_id}", "Address": "127.0.0.1", "Port": app.port,
         "Tags": [TAG], "Meta": {"haproxy-sync-host": f"{app.instance_id}.cabify.test"}} for app in apps
    ])
    for app in apps:
        wait_until(lambda app=app: answer(stack, f"{app.instance_id}.cabify.test") == app.instance_id, 10,
                   what=f"{app.instance_id} routed")
    return apps


def test_most_tagged_services_gone_at_once_are_held_and_come_back(stack: Stack, make_apps) -> None:
    apps = _four_branches(stack, make_apps)
    registrations = [
        {"ID": app.instance_id, "Name": f"svc-{app.instance_id}", "Address": "127.0.0.1", "Port": app.port,
         "Tags": [TAG], "Meta": {"haproxy-sync-host": f"{app.instance_id}.cabify.test"}} for app in apps[1:]
    ]
    reloads = stack.layout.reloads()
    _bulk(stack, "deregister", [app.instance_id for app in apps[1:]])  # a node dropping out for a moment
    stack.daemon.wait_for_log("guard: catalog 4 -> 1 tagged services")
    time.sleep(0.8)  # well past the settle and an apply of the empty health answers, within guard_delay (2 s)
    assert len(routes(stack)) == 4, "the routes of the services that vanished are kept while held"
    assert all(answer(stack, f"{app.instance_id}.cabify.test") == app.instance_id for app in apps[:1])
    assert "is not routed" not in stack.daemon.log()
    _bulk(stack, "register", registrations)  # back within guard_delay
    stack.daemon.wait_for_log("the drop was transient", timeout=10)
    assert len(routes(stack)) == 4
    assert all(answer(stack, f"{app.instance_id}.cabify.test") == app.instance_id for app in apps)
    assert stack.layout.reloads() == reloads, "nothing was removed, so nothing had to be added back"


def test_most_tagged_services_gone_for_good_are_removed_after_a_second_read(stack: Stack, make_apps) -> None:
    apps = _four_branches(stack, make_apps)
    _bulk(stack, "deregister", [app.instance_id for app in apps[1:]])
    stack.daemon.wait_for_log("guard: catalog 4 -> 1 tagged services")
    stack.daemon.wait_for_log("a second read confirms catalog 4 -> 1", timeout=10)
    wait_until(lambda: routes(stack) == {f"{apps[0].instance_id}.cabify.test": f"svc-{apps[0].instance_id}"}, 10,
               what="only the remaining service routed")
    assert answer(stack, f"{apps[1].instance_id}.cabify.test") in {"cabify-1", "cabify-2"}, "back to the default"


def test_more_tagged_services_than_open_files_allow_queue_instead_of_failing(stack: Stack, make_apps,
                                                                             tmp_path: Path) -> None:
    import resource
    import subprocess
    import sys

    app = make_apps(1, prefix="many")[0]
    count = 150
    _bulk(stack, "register", [
        {"ID": f"many-{i}", "Name": f"svc-many-{i}", "Address": "127.0.0.1", "Port": app.port, "Tags": [TAG],
         "Meta": {"haproxy-sync-host": f"many-{i}.cabify.test"}} for i in range(count)
    ])
    stack.daemon.stop()
    limit = 160  # 160 open files: 32 connections to Consul for 151 watches (uncapped: EMFILE)

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    log_path = tmp_path / "low-limit.log"
    with log_path.open("w") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "haproxy_sync.cli", "run", "--config",
                                   str(stack.layout.config_toml)], stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, preexec_fn=low_limit)
    try:
        wait_until(lambda: len(routes(stack)) == count, 60, interval=0.5, what="every tagged service routed")
        assert daemon.poll() is None
    finally:
        daemon.terminate()
        daemon.wait(10)
    log = log_path.read_text()
    assert f"the open-files limit ({limit}, hard {limit}) allows {limit - 128} connections to Consul" in log
    assert "fd_limit" not in log and "Too many open files" not in log and "Traceback" not in log
