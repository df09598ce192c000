"""devconsul against Consul's documented HTTP behaviour, over real sockets.

These tests talk raw HTTP (urllib, and aiohttp where many requests must be in flight at once) to a
devconsul on a free port, and check what Consul's docs say a client sees: field names and casing,
status codes and messages, check semantics, blocking queries, index rules, ACLs and faults. One
test drives it with py-consul to prove a real client works against it. Every server, thread and
socket a test opens is closed by the test; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from haproxy_sync.dev.devconsul import DevConsul, DevConsulThread, format_go_duration, parse_go_duration
from tests.integration.devconsul_http import Reply, call

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# Helpers


def wait_for(probe: Callable[[], T | None], *, timeout: float = 5.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def register(consul: DevConsulThread, body: dict[str, Any], query: str = "") -> None:
    reply = call("PUT", f"{consul.url}/v1/agent/service/register{query}", body)
    assert reply.status == 200, reply.text


def put(consul: DevConsulThread, path: str, body: Any = None) -> Reply:
    return call("PUT", f"{consul.url}{path}", body if body is not None else b"")


def get(consul: DevConsulThread, path: str, **kwargs: Any) -> Reply:
    return call("GET", f"{consul.url}{path}", **kwargs)


def health(consul: DevConsulThread, name: str, query: str = "") -> Reply:
    return get(consul, f"/v1/health/service/{name}{query}")


def checks_by_id(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["CheckID"]: check for check in entry["Checks"]}


def check_of(consul: DevConsulThread, name: str, check_id: str) -> dict[str, Any] | None:
    for entry in health(consul, name).json():
        if check_id in checks_by_id(entry):
            return checks_by_id(entry)[check_id]
    return None


def wait_for_status(consul: DevConsulThread, name: str, check_id: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        check = check_of(consul, name, check_id)
        return check if check is not None and check["Status"] == status else None

    return wait_for(probe, what=f"{check_id} to be {status}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])




@dataclass(frozen=True)
class Hit:
    """One request the application received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class App:
    """A tiny HTTP application whose health answer the test controls, as a check target."""

    status: int = 200
    body: bytes = b"ok"
    requests: list[Hit] = field(default_factory=list)
    _port: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> App:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                app.requests.append(Hit(self.command, self.path, dict(self.headers.items()), self.rfile.read(length)))
                self.send_response(app.status)
                self.send_header("Content-Length", str(len(app.body)))
                self.end_headers()
                self.wfile.write(app.body)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                """A check that gives up mid-answer is not a test failure."""

        self._server = Server(("127.0.0.1", 0), Handler)
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        """The port it listens (or listened) on; it stays known after stop()."""
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._server = None


@pytest.fixture
def app() -> Iterator[App]:
    application = App().start()
    try:
        yield application
    finally:
        application.stop()


# --------------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("100ms", 0.1),
        ("5s", 5.0),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
    ],
)
def test_go_durations_parse(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "message"), [("10", "missing unit"), ("soon", "invalid duration"), ("", "invalid")])
def test_go_durations_reject_what_go_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_go_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (0.1, "100ms"), (10, "10s"), (90, "1m30s"), (3600, "1h0m0s")])
def test_go_durations_format_like_go(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


# --------------------------------------------------------------------------------------------------
# Registration and the health/service shape


def test_registered_service_reads_back_in_consul_shape(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web", "Port": 8080, "Tags": ["blue"]})

    reply = health(consul, "web")

    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.headers["x-consul-knownleader"] == "true"
    assert reply.headers["x-consul-lastcontact"] == "0"
    assert reply.index >= 1
    [entry] = reply.json()
    assert entry["Node"]["Node"] == "devconsul"
    assert entry["Node"]["Address"] == "127.0.0.1"
    assert entry["Node"]["Datacenter"] == "dc1"
    service = entry["Service"]
    assert service["ID"] == "web-1"
    assert service["Service"] == "web"
    assert service["Address"] == ""  # no address registered: clients must fall back to Node.Address
    assert service["Port"] == 8080
    assert service["Tags"] == ["blue"]
    assert service["Weights"] == {"Passing": 1, "Warning": 1}
    assert service["Meta"] is None
    assert service["EnableTagOverride"] is False
    assert service["CreateIndex"] == service["ModifyIndex"] <= reply.index
    serf = checks_by_id(entry)["serfHealth"]
    assert serf["Status"] == "passing"
    assert serf["ServiceID"] == ""
    assert serf["ServiceTags"] == []


def test_keys_in_any_case_and_snake_case_are_accepted_and_id_defaults_to_name(
    consul: DevConsulThread,
) -> None:
    register(
        consul,
        {
            "name": "api",
            "address": "10.1.2.3",
            "port": 9000,
            "enable_tag_override": True,
            "meta": {"version": "2"},
            "weights": {"passing": 5, "warning": 2},
        },
    )

    services = get(consul, "/v1/agent/services").json()

    assert set(services) == {"api"}
    api = services["api"]
    assert (api["ID"], api["Service"], api["Address"], api["Port"]) == ("api", "api", "10.1.2.3", 9000)
    assert api["EnableTagOverride"] is True
    assert api["Meta"] == {"version": "2"}
    assert api["Weights"] == {"Passing": 5, "Warning": 2}
    assert api["TaggedAddresses"]["lan_ipv4"] == {"Address": "10.1.2.3", "Port": 9000}
    assert api["Datacenter"] == "dc1"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "Request decode failed: EOF"),
        (b"{not json", 400, "Request decode failed"),
        ({"Port": 1}, 400, "Missing service name"),
        (
            {"Name": "x", "Port": "80"},
            400,
            "cannot unmarshal string into Go struct field ServiceDefinition.Port of type int",
        ),
        ({"Name": "x", "Address": "0.0.0.0"}, 400, "Invalid service address"),
        (
            {"Name": "x", "Weights": {"Passing": 0, "Warning": 1}},
            400,
            "Invalid Weights: Passing must be greater than 0",
        ),
        (
            {"Name": "x", "Check": {"TTL": "1s", "Interval": "1s"}},
            400,
            "Invalid check: Interval and TTL cannot both be specified",
        ),
        ({"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/"}}, 400, "Invalid check: Interval must be > 0"),
        ({"Name": "x", "Check": {"Notes": "no kind"}}, 400, "Invalid check: TTL must be > 0 for TTL checks"),
        (
            {"Name": "x", "Check": {"TTL": "1s", "Status": "ok"}},
            400,
            "Status for checks must 'passing', 'warning', 'critical'",
        ),
        (
            {"Name": "x", "Check": {"TTL": "soon"}},
            400,
            'Request decode failed: time: invalid duration "soon"',
        ),
        (
            {"Name": "x", "Check": {"Args": ["/bin/true"], "Interval": "1s"}},
            500,
            "Scripts are disabled on this agent",
        ),
    ],
)
def test_bad_registrations_answer_like_consul(consul: DevConsulThread, body: Any, status: int, message: str) -> None:
    reply = put(consul, "/v1/agent/service/register", body)

    assert reply.status == status
    assert message in reply.text
    assert get(consul, "/v1/agent/services").json() == {}


def test_register_is_put_only(consul: DevConsulThread) -> None:
    assert get(consul, "/v1/agent/service/register").status == 405


def test_reregistering_replaces_the_service_and_keeps_check_state(consul: DevConsulThread) -> None:
    body = {
        "ID": "web-1",
        "Name": "web",
        "Port": 8080,
        "Tags": ["a"],
        "Check": {"CheckID": "alive", "TTL": "30s"},
    }
    register(consul, body)
    assert put(consul, "/v1/agent/check/pass/alive?note=fine").status == 200
    before = health(consul, "web").index

    register(consul, {**body, "Port": 9090, "Tags": ["b"]})

    reply = health(consul, "web")
    [entry] = reply.json()
    assert entry["Service"]["Port"] == 9090
    assert entry["Service"]["Tags"] == ["b"]
    alive = checks_by_id(entry)["alive"]
    assert (alive["Status"], alive["Output"], alive["ServiceTags"]) == ("passing", "fine", ["b"])
    assert reply.index > before
    register(consul, {**body, "Port": 9090, "Tags": ["b"]})
    assert health(consul, "web").index == reply.index  # an identical registration changes nothing


def test_replace_existing_checks_drops_checks_missing_from_the_request(consul: DevConsulThread) -> None:
    both = {
        "ID": "web-1",
        "Name": "web",
        "Checks": [{"CheckID": "c1", "TTL": "30s"}, {"CheckID": "c2", "TTL": "30s"}],
    }
    only_c1 = {"ID": "web-1", "Name": "web", "Checks": [{"CheckID": "c1", "TTL": "30s"}]}
    register(consul, both)

    register(consul, only_c1)
    assert set(checks_by_id(health(consul, "web").json()[0])) == {"serfHealth", "c1", "c2"}

    register(consul, only_c1, "?replace-existing-checks=true")
    assert set(checks_by_id(health(consul, "web").json()[0])) == {"serfHealth", "c1"}


def test_default_check_ids_and_names_follow_consul(consul: DevConsulThread) -> None:
    register(consul, {"ID": "one", "Name": "web", "Check": {"TTL": "30s"}})
    register(consul, {"ID": "two", "Name": "web", "Checks": [{"TTL": "30s"}, {"TTL": "30s"}]})

    entries = {entry["Service"]["ID"]: checks_by_id(entry) for entry in health(consul, "web").json()}

    assert set(entries["one"]) == {"serfHealth", "service:one"}
    assert set(entries["two"]) == {"serfHealth", "service:two:1", "service:two:2"}
    assert entries["one"]["service:one"]["Name"] == "Service 'web' check"
    assert entries["one"]["service:one"]["Status"] == "critical"  # Consul's initial status
    assert entries["one"]["service:one"]["Type"] == "ttl"


def test_deregister_removes_the_instance_and_moves_its_index(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web"})
    register(consul, {"ID": "web-2", "Name": "web"})
    before = health(consul, "web").index

    assert put(consul, "/v1/agent/service/deregister/web-1").status == 200

    reply = health(consul, "web")
    assert [entry["Service"]["ID"] for entry in reply.json()] == ["web-2"]
    assert reply.index > before
    unknown = put(consul, "/v1/agent/service/deregister/nope")
    assert unknown.status == 404
    assert 'Unknown service ID "nope"' in unknown.text


def test_logging_is_one_key_value_line_per_event(consul: DevConsulThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="haproxy_sync.devconsul")

    register(consul, {"ID": "web-1", "Name": "web", "Port": 8080})

    assert "devconsul: registered service id=web-1 name=web" in caplog.text
    assert all(record.name == "haproxy_sync.devconsul" for record in caplog.records)


# --------------------------------------------------------------------------------------------------
# Checks devconsul really runs


def test_http_check_follows_the_application(consul: DevConsulThread, app: App) -> None:
    register(
        consul,
        {
            "ID": "web-1",
            "Name": "web",
            "Port": app.port,
            "Check": {"HTTP": app.url, "Interval": "100ms", "Timeout": "1s"},
        },
    )

    passing = wait_for_status(consul, "web", "service:web-1", "passing")
    assert passing["Output"] == f"HTTP GET {app.url}: 200 OK Output: ok"
    assert passing["Type"] == "http"
    assert passing["Interval"] == "100ms"

    app.status, app.body = 500, b"boom"
    critical = wait_for_status(consul, "web", "service:web-1", "critical")
    assert critical["Output"] == f"HTTP GET {app.url}: 500 Internal Server Error Output: boom"

    app.status = 429
    wait_for_status(consul, "web", "service:web-1", "warning")

    app.status = 200
    wait_for_status(consul, "web", "service:web-1", "passing")

    app.stop()
    refused = wait_for_status(consul, "web", "service:web-1", "critical")
    assert refused["Output"].startswith(f'Get "{app.url}": dial tcp 127.0.0.1:{app.port}: connect: ')
    assert "refused" in refused["Output"]


def test_http_check_runs_at_once_with_its_method_and_headers(consul: DevConsulThread, app: App) -> None:
    register(
        consul,
        {
            "ID": "web-1",
            "Name": "web",
            "Check": {
                "HTTP": app.url,
                "Interval": "1m",
                "Method": "POST",
                "Header": {"X-Probe": ["yes"]},
                "Body": "ping",
            },
        },
    )

    wait_for_status(consul, "web", "service:web-1", "passing")  # long before one Interval

    hit = app.requests[0]
    assert (hit.method, hit.body) == ("POST", b"ping")
    assert hit.headers["X-Probe"] == "yes"
    assert hit.headers["User-Agent"] == "Consul Health Check"


def test_check_tasks_stop_on_deregister_and_on_stop(app: App) -> None:
    def hits(query: str) -> int:
        return sum(hit.path.endswith(query) for hit in app.requests)

    with DevConsulThread() as consul:
        for sid in ("a", "b"):
            register(consul, {"ID": sid, "Name": "web", "Check": {"HTTP": f"{app.url}?{sid}", "Interval": "50ms"}})
        wait_for(lambda: hits("?a") >= 3 and hits("?b") >= 3, what="both checks to probe")
        put(consul, "/v1/agent/service/deregister/a")
        time.sleep(0.1)  # a probe already in flight may still land
        after_deregister, b_before = hits("?a"), hits("?b")
        wait_for(lambda: hits("?b") >= b_before + 3, what="b to go on probing")
        assert hits("?a") == after_deregister
    after_stop = len(app.requests)
    time.sleep(0.3)
    assert len(app.requests) == after_stop


def test_tcp_check_passes_while_the_port_accepts(consul: DevConsulThread, app: App) -> None:
    target = f"127.0.0.1:{app.port}"
    register(consul, {"ID": "db-1", "Name": "db", "Check": {"TCP": target, "Interval": "100ms"}})

    assert wait_for_status(consul, "db", "service:db-1", "passing")["Output"] == f"TCP connect {target}: Success"
    app.stop()
    assert "refused" in wait_for_status(consul, "db", "service:db-1", "critical")["Output"]


def test_ttl_check_pass_warn_fail_and_expiry(consul: DevConsulThread) -> None:
    register(consul, {"ID": "job-1", "Name": "job", "Check": {"CheckID": "beat", "TTL": "500ms"}})
    assert check_of(consul, "job", "beat")["Status"] == "critical"  # type: ignore[index]

    for verb, status in (("pass", "passing"), ("warn", "warning"), ("fail", "critical"), ("pass", "passing")):
        assert put(consul, f"/v1/agent/check/{verb}/beat?note={verb}-note").status == 200
        check = check_of(consul, "job", "beat")
        assert check is not None
        assert (check["Status"], check["Output"]) == (status, f"{verb}-note")

    expired = wait_for_status(consul, "job", "beat", "critical")
    assert expired["Output"] == "TTL expired (last output before timeout follows): pass-note"


def test_check_update_sets_status_and_output(consul: DevConsulThread) -> None:
    register(consul, {"ID": "job-1", "Name": "job", "Check": {"CheckID": "beat", "TTL": "30s"}})

    assert put(consul, "/v1/agent/check/update/beat", {"Status": "warning", "Output": "disk 91%"}).status == 200
    check = check_of(consul, "job", "beat")
    assert check is not None
    assert (check["Status"], check["Output"]) == ("warning", "disk 91%")

    bad = put(consul, "/v1/agent/check/update/beat", {"Status": "bogus"})
    assert (bad.status, bad.text) == (400, "Invalid check status: 'bogus'")


UNKNOWN_CHECK = 'Unknown check ID "{}". Ensure that the check ID is passed, not the check name.'


@pytest.mark.parametrize("verb", ["pass", "warn", "fail", "update"])
def test_ttl_verbs_on_an_unknown_check_are_404(consul: DevConsulThread, verb: str) -> None:
    """vetCheckUpdateWithAuthorizer: a check the agent does not have is 404 before anything else."""
    body = {"Status": "passing"} if verb == "update" else None
    reply = put(consul, f"/v1/agent/check/{verb}/nope", body)

    assert (reply.status, reply.text) == (404, UNKNOWN_CHECK.format("nope"))
    serf = put(consul, f"/v1/agent/check/{verb}/serfHealth", body)  # the servers' check, not the agent's
    assert (serf.status, serf.text) == (404, UNKNOWN_CHECK.format("serfHealth"))


def test_ttl_verbs_on_an_unknown_check_are_404_with_acls_too() -> None:
    with DevConsulThread(token="root") as consul:
        reply = call("PUT", f"{consul.url}/v1/agent/check/pass/nope", b"", headers={"X-Consul-Token": "root"})
        assert (reply.status, reply.text) == (404, UNKNOWN_CHECK.format("nope"))
        anonymous = put(consul, "/v1/agent/check/pass/nope")  # no permission needed to learn it is unknown
        assert (anonymous.status, anonymous.text) == (404, UNKNOWN_CHECK.format("nope"))
        bad = call("PUT", f"{consul.url}/v1/agent/check/pass/nope", b"", headers={"X-Consul-Token": "bogus"})
        assert (bad.status, bad.text) == (403, "ACL not found")  # the token is resolved first


def test_ttl_verbs_need_a_ttl_check(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web"})
    put(consul, "/v1/agent/service/maintenance/web-1?enable=true")

    reply = put(consul, "/v1/agent/check/pass/_service_maintenance:web-1")

    assert (reply.status, reply.text) == (500, 'CheckID "_service_maintenance:web-1" does not have associated TTL')


def test_check_register_and_deregister_endpoints(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web"})

    assert put(consul, "/v1/agent/check/register", {"Name": "extra", "ServiceID": "web-1", "TTL": "30s"}).status == 200
    assert "extra" in checks_by_id(health(consul, "web").json()[0])
    assert put(consul, "/v1/agent/check/register", {"TTL": "30s"}).text == "Missing check name"
    assert put(consul, "/v1/agent/check/deregister/extra").status == 200
    assert "extra" not in checks_by_id(health(consul, "web").json()[0])
    assert put(consul, "/v1/agent/check/deregister/extra").status == 404


def test_deregister_critical_service_after_reaps_the_service(consul: DevConsulThread) -> None:
    register(
        consul,
        {"ID": "web-1", "Name": "web", "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "200ms"}},
    )

    wait_for(lambda: health(consul, "web").json() == [], what="the critical service to be reaped")


# --------------------------------------------------------------------------------------------------
# Maintenance


def test_service_maintenance_adds_and_removes_a_critical_check(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web"})

    assert put(consul, "/v1/agent/service/maintenance/web-1?enable=true&reason=deploying").status == 200
    maint = checks_by_id(health(consul, "web").json()[0])["_service_maintenance:web-1"]
    assert (maint["Status"], maint["Notes"], maint["Name"]) == (
        "critical",
        "deploying",
        "Service Maintenance Mode",
    )
    assert maint["ServiceID"] == "web-1"
    assert health(consul, "web", "?passing").json() == []

    assert put(consul, "/v1/agent/service/maintenance/web-1?enable=false").status == 200
    assert "_service_maintenance:web-1" not in checks_by_id(health(consul, "web").json()[0])


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v1/agent/service/maintenance/web-1", 400, "Missing value for enable"),
        ("/v1/agent/service/maintenance/web-1?enable=maybe", 400, 'Invalid value for enable: "maybe"'),
        ("/v1/agent/service/maintenance/nope?enable=true", 404, 'Unknown service ID "nope"'),
        ("/v1/agent/maintenance", 400, "Missing value for enable"),
    ],
)
def test_maintenance_parameters_are_validated(consul: DevConsulThread, path: str, status: int, message: str) -> None:
    register(consul, {"ID": "web-1", "Name": "web"})

    reply = put(consul, path)

    assert reply.status == status
    assert message in reply.text


def test_node_maintenance_marks_every_service_and_moves_their_indexes(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web"})
    register(consul, {"ID": "api-1", "Name": "api"})
    before = {name: health(consul, name).index for name in ("web", "api")}

    assert put(consul, "/v1/agent/maintenance?enable=true").status == 200

    for name in ("web", "api"):
        reply = health(consul, name)
        maint = checks_by_id(reply.json()[0])["_node_maintenance"]
        assert maint["Status"] == "critical"
        assert maint["Notes"].startswith("Maintenance mode is enabled for this node")
        assert reply.index > before[name]
    assert put(consul, "/v1/agent/maintenance?enable=false").status == 200
    assert "_node_maintenance" not in checks_by_id(health(consul, "web").json()[0])


# --------------------------------------------------------------------------------------------------
# Query parameters


def test_passing_keeps_only_instances_whose_checks_all_pass(consul: DevConsulThread) -> None:
    for sid, verb in (("a", "pass"), ("b", "warn"), ("c", "fail")):
        register(consul, {"ID": sid, "Name": "web", "Check": {"TTL": "30s"}})
        assert put(consul, f"/v1/agent/check/{verb}/service:{sid}").status == 200

    def ids(query: str) -> list[str]:
        return [entry["Service"]["ID"] for entry in health(consul, "web", query).json()]

    assert ids("?passing") == ["a"]
    assert ids("?passing=true") == ["a"]
    assert ids("?passing=1") == ["a"]
    assert ids("?passing=false") == ["a", "b", "c"]
    assert ids("") == ["a", "b", "c"]
    assert health(consul, "web", "?passing=maybe").status == 400


def test_tag_filter_needs_every_tag_case_insensitively(consul: DevConsulThread) -> None:
    register(consul, {"ID": "a", "Name": "web", "Tags": ["blue", "v1"]})
    register(consul, {"ID": "b", "Name": "web", "Tags": ["blue"]})
    register(consul, {"ID": "c", "Name": "web", "Tags": ["green"]})

    def ids(query: str) -> list[str]:
        return [entry["Service"]["ID"] for entry in health(consul, "web", query).json()]

    assert ids("?tag=blue") == ["a", "b"]
    assert ids("?tag=blue&tag=v1") == ["a"]
    assert ids("?tag=BLUE") == ["a", "b"]
    assert ids("?tag=red") == []


def test_filter_expressions(consul: DevConsulThread) -> None:
    register(consul, {"ID": "a", "Name": "web", "Tags": ["blue"], "Meta": {"version": "2"}})
    register(consul, {"ID": "b", "Name": "web", "Tags": ["green"], "Check": {"TTL": "30s"}})

    def ids(expression: str) -> list[str]:
        query = urllib.parse.urlencode({"filter": expression})
        reply = health(consul, "web", f"?{query}")
        assert reply.status == 200, reply.text
        return [entry["Service"]["ID"] for entry in reply.json()]

    assert ids('Service.Tags contains "blue"') == ["a"]
    assert ids('"green" in Service.Tags') == ["b"]
    assert ids("Service.Meta.version == 2") == ["a"]
    assert ids("Checks.Status == critical") == ["b"]
    assert ids('not (Service.ID == "a") and Service.Meta is empty') == ["b"]
    assert ids('Service.ID matches "^[ab]$" or Service.Port != 0') == ["a", "b"]
    # go-bexpr v0.1.2 evaluate.go:232-250: a list selector matches when one element does, for != too:
    # b's TTL check is critical, but the node's serfHealth on every entry is not
    assert ids('Checks.Status != "critical"') == ["a", "b"]
    assert ids('not Checks.Status == "critical"') == ["a"]


def test_a_filter_on_a_dashed_meta_key_uses_the_index_form(consul: DevConsulThread) -> None:
    register(consul, {"ID": "a", "Name": "web", "Meta": {"haproxy-sync-host": "a.example"}})
    register(consul, {"ID": "b", "Name": "web", "Meta": {"haproxy-sync-host": "b.example"}})
    query = urllib.parse.urlencode({"filter": 'Service.Meta["haproxy-sync-host"] == "a.example"'})
    reply = health(consul, "web", f"?{query}")
    assert reply.status == 200, reply.text
    assert [entry["Service"]["ID"] for entry in reply.json()] == ["a"]


def test_a_bad_filter_is_a_500_with_bexprs_message(consul: DevConsulThread) -> None:
    # Consul's agent/http.go answers an error that is no HTTPError with 500 and the error's text; the text
    # is bexpr.CreateFilter's (go-bexpr v0.1.2 filter.go:38) around the parser's or validator's message
    for expression, message in (
        ("Nope == 1", 'Selector "Nope" is not valid'),
        ("Service.ID ==", '1:14 (13): no match found, expected: "-", "0", "\\"", "`", [ \\t\\r\\n], [1-9] or [a-zA-Z]'),
        ('Service.Meta.haproxy-sync-host == "a"',
         '1:21 (20): no match found, expected: "!=", ".", "==", "[", [ \\t\\r\\n] or [a-zA-Z0-9_]'),
    ):
        bad = health(consul, "web", "?filter=" + urllib.parse.quote(expression))
        assert (bad.status, bad.text) == (500, f"Failed to create boolean expression evaluator: {message}")


def test_other_datacenters_and_conflicting_consistency_are_refused(consul: DevConsulThread) -> None:
    assert health(consul, "web", "?dc=dc1&stale&near=_agent").status == 200
    other = health(consul, "web", "?dc=dc2")
    assert (other.status, other.text) == (500, "No path to datacenter")
    assert health(consul, "web", "?stale&consistent").status == 400


# --------------------------------------------------------------------------------------------------
# Blocking queries and indexes


def test_blocking_query_returns_early_on_a_change(consul: DevConsulThread, pool: ThreadPoolExecutor) -> None:
    register(consul, {"ID": "web-1", "Name": "web"})
    index = health(consul, "web").index

    pending: Future[Reply] = pool.submit(health, consul, "web", f"?index={index}&wait=30s")
    time.sleep(0.2)
    assert not pending.done()
    started = time.monotonic()
    register(consul, {"ID": "web-2", "Name": "web"})
    reply = pending.result(timeout=5)

    assert time.monotonic() - started < 2
    assert reply.index > index
    assert [entry["Service"]["ID"] for entry in reply.json()] == ["web-1", "web-2"]


def test_blocking_query_answers_after_wait_plus_bounded_jitter(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web"})
    index = health(consul, "web").index
    threading.Timer(0.1, register, (consul, {"ID": "api-1", "Name": "api"})).start()  # not what it waits on

    started = time.monotonic()
    reply = health(consul, "web", f"?index={index}&wait=400ms")
    elapsed = time.monotonic() - started

    assert 0.4 <= elapsed < 0.4 + 0.4 / 16 + 0.5  # wait, at most wait/16 of jitter, and slack
    assert reply.index == index
    assert len(reply.json()) == 1


@pytest.mark.parametrize("query", ["", "?index=0&wait=10s", "?wait=10s"])
def test_reads_without_an_index_answer_at_once(consul: DevConsulThread, query: str) -> None:
    started = time.monotonic()
    assert health(consul, "web", query).status == 200
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    ("query", "message"), [("?index=x", "Invalid index"), ("?index=1&wait=10", "Invalid wait time")]
)
def test_bad_blocking_parameters_are_refused(consul: DevConsulThread, query: str, message: str) -> None:
    reply = health(consul, "web", query)
    assert (reply.status, reply.text) == (400, message)


def test_index_rules(consul: DevConsulThread) -> None:
    start = consul.index
    assert start >= 1
    assert health(consul, "never").index == start  # a name that never existed: the global index

    register(consul, {"ID": "web-1", "Name": "web"})
    web = health(consul, "web").index
    assert web == consul.index > start

    register(consul, {"ID": "api-1", "Name": "api"})
    assert consul.index > web
    assert health(consul, "web").index == web  # another service's write does not move web's index
    assert get(consul, "/v1/catalog/services").index == consul.index

    put(consul, "/v1/agent/service/deregister/web-1")
    assert health(consul, "web").index == consul.index > web  # a deregistration moves it too
    assert health(consul, "web").json() == []


def test_output_only_change_waits_for_check_update_interval(pool: ThreadPoolExecutor) -> None:
    """agent/local/state.go UpdateCheck: same status, new output: the agent's state has it at once, the
    catalog (and every index) only after check_update_interval / 2 plus up to the interval."""
    with DevConsulThread(check_update_interval=1.0) as consul:
        register(consul, {"ID": "job-1", "Name": "job", "Check": {"CheckID": "beat", "TTL": "30s"}})
        put(consul, "/v1/agent/check/pass/beat?note=a")  # critical -> passing: a status change, at once
        first = health(consul, "job")
        assert checks_by_id(first.json()[0])["beat"]["Output"] == "a"
        put(consul, "/v1/agent/check/pass/beat?note=a")
        assert health(consul, "job").index == first.index  # same status, same output: nothing changed

        pending: Future[Reply] = pool.submit(health, consul, "job", f"?index={first.index}&wait=30s")
        time.sleep(0.05)
        changed_at = time.monotonic()
        put(consul, "/v1/agent/check/pass/beat?note=b")
        assert get(consul, "/v1/agent/checks").json()["beat"]["Output"] == "b"  # the agent's own state: at once
        assert checks_by_id(health(consul, "job").json()[0])["beat"]["Output"] == "a"
        put(consul, "/v1/agent/check/pass/beat?note=c")  # the latest output is the one that goes out
        second = pending.result(timeout=5)
        waited = time.monotonic() - changed_at

        assert 0.45 <= waited <= 1.6, waited  # 0.5 s (half the interval) to 1.5 s
        assert second.index > first.index
        beat = checks_by_id(second.json()[0])["beat"]
        assert (beat["Status"], beat["Output"], beat["ModifyIndex"]) == ("passing", "c", second.index)
        assert get(consul, "/v1/catalog/services").index < second.index  # the services table did not move


def test_a_status_change_goes_out_at_once_with_the_latest_output() -> None:
    with DevConsulThread(check_update_interval=60.0) as consul:
        register(consul, {"ID": "job-1", "Name": "job", "Check": {"CheckID": "beat", "TTL": "30s"}})
        put(consul, "/v1/agent/check/pass/beat?note=a")
        index = health(consul, "job").index
        put(consul, "/v1/agent/check/pass/beat?note=b")  # deferred for 30 s or more
        assert health(consul, "job").index == index

        put(consul, "/v1/agent/check/warn/beat?note=c")

        beat = checks_by_id(health(consul, "job").json()[0])["beat"]
        assert (beat["Status"], beat["Output"]) == ("warning", "c")
        assert health(consul, "job").index > index


def test_the_default_interval_holds_a_blocking_query_through_output_noise() -> None:
    with DevConsulThread() as consul:  # check_update_interval 5m, as Consul's default
        register(consul, {"ID": "job-1", "Name": "job", "Check": {"CheckID": "beat", "TTL": "30s"}})
        put(consul, "/v1/agent/check/pass/beat?note=a")
        index = health(consul, "job").index
        for note in ("b", "c", "d"):
            put(consul, f"/v1/agent/check/pass/beat?note={note}")
        started = time.monotonic()
        held = health(consul, "job", f"?index={index}&wait=1s")

        assert time.monotonic() - started >= 0.95
        assert held.index == index
        assert checks_by_id(held.json()[0])["beat"]["Output"] == "a"
        assert get(consul, "/v1/agent/checks").json()["beat"]["Output"] == "d"


def test_interval_zero_writes_every_output_at_once() -> None:
    """check_update_interval=0 is Consul's switch for syncing every update (what tests/conftest.py uses)."""
    with DevConsulThread(check_update_interval=0) as consul:
        register(consul, {"ID": "job-1", "Name": "job", "Check": {"CheckID": "beat", "TTL": "30s"}})
        put(consul, "/v1/agent/check/pass/beat?note=a")
        first = health(consul, "job")

        put(consul, "/v1/agent/check/pass/beat?note=b")

        second = health(consul, "job")
        assert second.index > first.index
        assert checks_by_id(second.json()[0])["beat"]["Output"] == "b"


def test_a_negative_check_update_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="check_update_interval"):
        DevConsul(check_update_interval=-1)


def test_a_deferred_output_goes_out_when_the_agent_restarts() -> None:
    """A restarted agent's first full sync has no deferral running: what it kept locally goes out."""
    consul = DevConsulThread(check_update_interval=60.0).start()
    try:
        register(consul, {"ID": "job-1", "Name": "job", "Check": {"CheckID": "beat", "TTL": "30s"}})
        put(consul, "/v1/agent/check/pass/beat?note=a")
        put(consul, "/v1/agent/check/pass/beat?note=b")
        before = health(consul, "job")
        assert checks_by_id(before.json()[0])["beat"]["Output"] == "a"

        consul.stop()
        consul.start()  # the same port, catalog and agent state

        after = health(consul, "job")
        assert checks_by_id(after.json()[0])["beat"]["Output"] == "b"
        assert after.index > before.index
    finally:
        consul.stop()


# --------------------------------------------------------------------------------------------------
# Other endpoints


def test_catalog_endpoints(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web", "Port": 80, "Tags": ["b", "a"]})
    register(consul, {"ID": "web-2", "Name": "web", "Port": 81, "Address": "10.0.0.2", "Tags": ["c"]})

    assert get(consul, "/v1/catalog/services").json() == {"consul": [], "web": ["a", "b", "c"]}
    nodes = get(consul, "/v1/catalog/service/web").json()
    assert [(n["ServiceID"], n["ServiceAddress"], n["Address"], n["ServicePort"]) for n in nodes] == [
        ("web-1", "", "127.0.0.1", 80),
        ("web-2", "10.0.0.2", "127.0.0.1", 81),
    ]
    assert [n["ServiceID"] for n in get(consul, "/v1/catalog/service/web?tag=c").json()] == ["web-2"]
    [node] = get(consul, "/v1/catalog/nodes").json()
    assert (node["Node"], node["Address"], node["Datacenter"]) == ("devconsul", "127.0.0.1", "dc1")
    assert get(consul, "/v1/catalog/datacenters").json() == ["dc1"]


def test_health_checks_and_state_endpoints(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web", "Check": {"CheckID": "beat", "TTL": "30s"}})

    assert [c["CheckID"] for c in get(consul, "/v1/health/checks/web").json()] == ["beat"]
    assert [c["CheckID"] for c in get(consul, "/v1/health/state/critical").json()] == ["beat"]
    assert {c["CheckID"] for c in get(consul, "/v1/health/state/any").json()} == {"serfHealth", "beat"}
    assert [c["CheckID"] for c in get(consul, "/v1/health/state/passing").json()] == ["serfHealth"]
    assert {c["CheckID"] for c in get(consul, "/v1/health/node/devconsul").json()} == {"serfHealth", "beat"}
    bad = get(consul, "/v1/health/state/bogus")
    assert (bad.status, bad.text) == (400, "Bad check state")


def test_agent_endpoints(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web", "Check": {"CheckID": "beat", "TTL": "30s"}})

    assert set(get(consul, "/v1/agent/services").json()) == {"web-1"}  # not the catalog's "consul"
    assert set(get(consul, "/v1/agent/checks").json()) == {"beat"}
    assert get(consul, "/v1/agent/service/web-1").json()["Service"] == "web"
    assert get(consul, "/v1/agent/service/nope").status == 404
    me = get(consul, "/v1/agent/self").json()
    assert (me["Config"]["Datacenter"], me["Config"]["NodeName"], me["Member"]["Name"]) == (
        "dc1",
        "devconsul",
        "devconsul",
    )
    assert [m["Name"] for m in get(consul, "/v1/agent/members").json()] == ["devconsul"]


def test_status_endpoints(consul: DevConsulThread) -> None:
    leader = get(consul, "/v1/status/leader")
    assert leader.body == b'"127.0.0.1:8300"'
    assert leader.index >= 1
    assert get(consul, "/v1/status/peers").json() == ["127.0.0.1:8300"]


def test_node_identity_is_configurable() -> None:
    with DevConsulThread(datacenter="eu1", node="n1", node_address="10.0.0.5") as consul:
        register(consul, {"ID": "web-1", "Name": "web"})
        node = health(consul, "web", "?dc=eu1").json()[0]["Node"]
        assert (node["Node"], node["Address"], node["Datacenter"]) == ("n1", "10.0.0.5", "eu1")
        assert get(consul, "/v1/status/leader").json() == "10.0.0.5:8300"


# --------------------------------------------------------------------------------------------------
# ACL


def test_token_shorthand_is_a_management_token_over_default_deny(caplog: pytest.LogCaptureFixture) -> None:
    """DevConsul(token=...) as Consul with that token as its initial management token and default deny:
    token-less reads are filtered (200, empty, no filtered header), not refused; the rest is in
    test_devconsul_acl.py."""
    caplog.set_level(logging.DEBUG, logger="haproxy_sync.devconsul")
    token = "s3cret-token"
    with DevConsulThread(token=token) as consul:
        headers = {"X-Consul-Token": token}
        good = call("PUT", f"{consul.url}/v1/agent/service/register", {"Name": "web"}, headers=headers)
        assert good.status == 200

        none = health(consul, "web")
        assert (none.status, none.json()) == (200, [])
        assert "x-consul-results-filtered-by-acls" not in none.headers
        assert none.headers["x-consul-default-acl-policy"] == "deny"
        wrong = get(consul, "/v1/health/service/web", headers={"X-Consul-Token": "guess"})
        assert (wrong.status, wrong.text) == (403, "ACL not found")
        denied = put(consul, "/v1/agent/service/register", {"Name": "web"})
        assert denied.status == 403
        assert denied.text.startswith("Permission denied: anonymous token lacks permission 'service:write' on \"web\"")

        assert [e["Service"]["ID"] for e in get(consul, f"/v1/health/service/web?token={token}").json()] == ["web"]
        assert get(consul, "/v1/status/leader").status == 200
        bearer = get(consul, "/v1/agent/services", headers={"Authorization": f"Bearer {token}"})
        assert set(bearer.json()) == {"web"}
    assert token not in caplog.text


# --------------------------------------------------------------------------------------------------
# Faults


def test_refuse_closes_the_port_and_resumes_on_the_same_one(consul: DevConsulThread, pool: ThreadPoolExecutor) -> None:
    port = consul.port
    pending: Future[Reply] = pool.submit(health, consul, "web", f"?index={consul.index}&wait=30s")
    time.sleep(0.2)

    consul.set_fault("refuse")

    with pytest.raises(ConnectionError):
        pending.result(timeout=5)
    with pytest.raises(urllib.error.URLError) as refused:
        health(consul, "web")
    assert isinstance(refused.value.reason, ConnectionRefusedError)
    with pytest.raises(urllib.error.URLError):
        put(consul, "/v1/agent/service/register", {"Name": "web"})

    consul.clear_fault()
    assert consul.port == port
    assert health(consul, "web").status == 200


def test_refuse_and_clear_in_quick_succession_end_up_listening(consul: DevConsulThread) -> None:
    for _ in range(3):
        consul.set_fault("refuse")
        consul.clear_fault()
    consul.set_fault("refuse")
    consul.clear_fault()
    consul.set_fault("refuse")
    with pytest.raises(urllib.error.URLError):
        health(consul, "web")
    consul.clear_fault()
    assert health(consul, "web").status == 200


def test_reset_aborts_reads_writes_and_pending_queries(consul: DevConsulThread, pool: ThreadPoolExecutor) -> None:
    pending: Future[Reply] = pool.submit(health, consul, "web", f"?index={consul.index}&wait=30s")
    time.sleep(0.2)

    consul.set_fault("reset")

    with pytest.raises(ConnectionError):
        pending.result(timeout=5)
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        health(consul, "web")
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        put(consul, "/v1/agent/service/register", {"Name": "web"})
    assert call("DELETE", f"{consul.url}/v1/devconsul/fault").status == 200  # the control path still works
    assert health(consul, "web").status == 200


@pytest.mark.parametrize(
    ("fault", "status", "message"),
    [
        ("no_leader", 500, "No cluster leader"),
        ("forbidden", 403, "Permission denied"),
        ("rate_limited", 429, "rate limit exceeded"),
    ],
)
def test_error_faults_hit_reads_while_agent_writes_keep_working(
    consul: DevConsulThread, fault: str, status: int, message: str
) -> None:
    consul.set_fault(fault)

    for path in ("/v1/health/service/web", "/v1/catalog/services", "/v1/status/leader"):
        reply = get(consul, path)
        assert (reply.status, reply.text) == (status, message)
    register(consul, {"ID": "web-1", "Name": "web"})
    assert set(get(consul, "/v1/agent/services").json()) == {"web-1"}

    consul.clear_fault()
    assert [entry["Service"]["ID"] for entry in health(consul, "web").json()] == ["web-1"]


def test_an_error_fault_ends_a_pending_blocking_query(consul: DevConsulThread, pool: ThreadPoolExecutor) -> None:
    pending: Future[Reply] = pool.submit(health, consul, "web", f"?index={consul.index}&wait=30s")
    time.sleep(0.2)

    consul.set_fault("no_leader")

    assert pending.result(timeout=5).status == 500


def test_slow_delays_reads_only(consul: DevConsulThread) -> None:
    consul.set_fault("slow", delay=0.3)

    started = time.monotonic()
    register(consul, {"ID": "web-1", "Name": "web"})
    assert time.monotonic() - started < 0.3
    started = time.monotonic()
    assert health(consul, "web").status == 200
    assert time.monotonic() - started >= 0.3


def test_index_backwards_reports_a_lower_index_that_still_blocks(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web"})
    seen = health(consul, "web").index

    consul.set_fault("index_backwards")
    backwards = health(consul, "web")
    assert 1 <= backwards.index < seen
    started = time.monotonic()
    again = health(consul, "web", f"?index={backwards.index}&wait=200ms")
    assert time.monotonic() - started >= 0.2  # the lower index is the one blocking compares with
    assert again.index == backwards.index

    consul.clear_fault()
    assert health(consul, "web").index == seen


def test_index_zero(consul: DevConsulThread) -> None:
    consul.set_fault("index_zero")

    reply = health(consul, "web")

    assert reply.headers["x-consul-index"] == "0"
    assert reply.json() == []


def test_malformed_json(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web"})
    consul.set_fault("malformed_json")

    reply = health(consul, "web")

    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        reply.json()


def test_huge_is_the_normal_answer_padded_to_size(consul: DevConsulThread) -> None:
    register(consul, {"ID": "web-1", "Name": "web"})
    normal = health(consul, "web").json()
    consul.set_fault("huge", size_mb=1)

    reply = health(consul, "web")

    assert len(reply.body) >= 1024 * 1024
    assert reply.json() == normal


def test_faults_over_http(consul: DevConsulThread) -> None:
    assert put(consul, "/v1/devconsul/fault", {"fault": "slow", "delay": 0.2}).status == 200
    assert get(consul, "/v1/devconsul/fault").json() == {"fault": "slow", "delay": 0.2}
    assert put(consul, "/v1/devconsul/fault", {"fault": "bogus"}).status == 400
    assert put(consul, "/v1/devconsul/fault", {"fault": "slow", "nope": 1}).status == 400
    assert call("DELETE", f"{consul.url}/v1/devconsul/fault").json() == {"fault": None}
    with pytest.raises(ValueError, match="unknown fault"):
        consul.set_fault("bogus")

    assert put(consul, "/v1/devconsul/fault", {"fault": "refuse"}).status == 200  # answered, then refused
    with pytest.raises(urllib.error.URLError):
        health(consul, "web")
    consul.clear_fault()
    assert health(consul, "web").status == 200


# --------------------------------------------------------------------------------------------------
# Lifecycle


def test_stop_is_fast_with_a_hundred_pending_blocking_queries() -> None:
    async def scenario() -> tuple[float, list[Any]]:
        server = DevConsul()
        await server.start()
        url = f"{server.url}/v1/health/service/web?index={server.index}&wait=5m"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def fetch() -> int:
                async with session.get(url) as response:
                    return response.status

            tasks = [asyncio.create_task(fetch()) for _ in range(100)]
            await asyncio.sleep(0.5)
            assert not any(task.done() for task in tasks)
            started = time.monotonic()
            await server.stop()
            elapsed = time.monotonic() - started
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
        return elapsed, results

    elapsed, results = asyncio.run(scenario())

    assert elapsed < 1.0
    assert all(isinstance(result, aiohttp.ClientError) for result in results)


def test_async_api_and_properties() -> None:
    async def scenario() -> None:
        async with DevConsul() as server:
            assert server.port > 0
            assert server.address == f"127.0.0.1:{server.port}"
            assert server.url == f"http://127.0.0.1:{server.port}"
            assert server.index >= 1

    asyncio.run(scenario())


def test_thread_start_raises_when_the_port_is_taken_and_stop_is_idempotent() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = DevConsulThread(port=taken.getsockname()[1])
        with pytest.raises(OSError):
            server.start()
        server.stop()
    consul = DevConsulThread().start()
    consul.stop()
    consul.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def test_https_when_given_an_ssl_context(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))

    with DevConsulThread(ssl_context=server_context) as consul:
        assert consul.url.startswith("https://")
        assert call("GET", f"{consul.url}/v1/status/leader", context=client_context).status == 200


def test_the_command_line_takes_a_check_update_interval() -> None:
    from haproxy_sync.dev.devconsul.cli import _parser

    assert _parser().parse_args([]).check_update_interval == 300.0  # Consul's default, 5m
    assert _parser().parse_args(["--check-update-interval", "1m30s"]).check_update_interval == 90.0
    assert _parser().parse_args(["--check-update-interval", "0"]).check_update_interval == 0.0
    with pytest.raises(SystemExit):
        _parser().parse_args(["--check-update-interval", "soon"])


def test_run_forever_serves_until_sigterm() -> None:
    port = free_port()
    code = f"from haproxy_sync.dev.devconsul import run_forever; run_forever('127.0.0.1', {port})"
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/v1/status/leader"

        def answers() -> bool:
            try:
                return call("GET", url, timeout=1).status == 200
            except OSError:
                return False

        wait_for(answers, timeout=15, what="run_forever to listen")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)
    assert process.returncode == 0
    assert f"devconsul listening on http://127.0.0.1:{port}" in stderr


# --------------------------------------------------------------------------------------------------
# A real client


def test_py_consul_registers_and_reads(consul: DevConsulThread, monkeypatch: pytest.MonkeyPatch) -> None:
    import consul as py_consul

    for name in ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_SSL"):
        monkeypatch.delenv(name, raising=False)
    with py_consul.Consul(host="127.0.0.1", port=consul.port) as client:
        assert client.agent.service.register(
            "web", service_id="web-1", port=8080, tags=["blue"], check=py_consul.Check.ttl("30s")
        )
        assert client.agent.check.ttl_pass("service:web-1", notes="ready")

        index, nodes = client.health.service("web", passing=True)
        assert [(n["Service"]["ID"], n["Service"]["Port"], n["Node"]["Address"]) for n in nodes] == [
            ("web-1", 8080, "127.0.0.1")
        ]
        started = time.monotonic()
        same, _ = client.health.service("web", index=index, wait="100ms")
        assert same == index
        assert time.monotonic() - started >= 0.1
        _, services = client.catalog.services()
        assert services["web"] == ["blue"]
        assert client.agent.service.deregister("web-1")
        assert client.health.service("web")[1] == []


@pytest.fixture
def consul(consul_defaults: DevConsulThread) -> DevConsulThread:
    """devconsul with Consul's defaults (tests/integration/conftest.py)."""
    return consul_defaults


def _sockets_bound_to(port: int) -> list[int]:
    """The file descriptors of this process whose socket's local port is `port` (server-side ones)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            probe = socket.socket(fileno=os.dup(int(name)))
            try:
                address = probe.getsockname()
                if isinstance(address, tuple) and address[1] == port:
                    found.append(int(name))
            finally:
                probe.close()
    return found


def test_stop_while_clients_keep_connecting_leaves_no_server_socket_open() -> None:
    """A connection accepted as the listener closes must be closed by stop(), not left to the GC."""
    for _ in range(15):
        consul = DevConsulThread(port=0).start()
        port = consul.port
        stopping = threading.Event()

        def hammer(port: int, stopping: threading.Event) -> None:
            while not stopping.is_set():
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as client:
                    client.sendall(b"GET /v1/health/service/web?index=1&wait=5m HTTP/1.1\r\nHost: x\r\n\r\n")
                    time.sleep(0.001)

        clients = [threading.Thread(target=hammer, args=(port, stopping), daemon=True) for _ in range(8)]
        for client in clients:
            client.start()
        time.sleep(0.05)
        consul.stop()
        stopping.set()
        for client in clients:
            client.join(timeout=5)
        assert _sockets_bound_to(port) == [], f"devconsul left connections on port {port} open after stop()"


@pytest.mark.parametrize(("query", "headers", "text"), [
    ("?ns=default", {}, 'Bad request: Invalid query parameter: "ns" - Namespaces are a Consul Enterprise feature'),
    ("?ns=team-a", {}, 'Bad request: Invalid query parameter: "ns" - Namespaces are a Consul Enterprise feature'),
    ("?partition=default", {},
     'Bad request: Invalid query parameter: "partition" - Partitions are a Consul Enterprise feature'),
    ("?ns=x", {"X-Consul-Namespace": "x"},
     'Bad request: Invalid header: "X-Consul-Namespace" - Namespaces are a Consul Enterprise feature'),
])
def test_namespaces_and_partitions_are_refused_as_consul_ce_does(
        consul: DevConsulThread, query: str, headers: dict[str, str], text: str) -> None:
    """Consul CE's parseEntMeta (agent/http_ce.go): any non-empty ns or partition is a 400, "default" too."""
    for path in ("/v1/health/service/web", "/v1/catalog/services"):
        reply = call("GET", consul.url + path + query, headers=headers)
        assert (reply.status, reply.text) == (400, text)
    assert call("GET", consul.url + "/v1/health/service/web?ns=").status == 200, "an empty one is no namespace"
