"""Answers read from HAProxy's sockets are untrusted: `show servers state` is allowlisted column by
column before anything is converted, a bad answer is a SocketError (never a ValueError that ends the
daemon), the saved state file only ever holds lines that parse, and one cycle that fails in a way
nobody foresaw is logged, counted and retried instead of killing the daemon.

Also here, since the names come from Consul: series of services that come and go do not pile up."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, cast

import pytest

from haproxy_sync import drains, haproxy, stats_file
from haproxy_sync import watchset as watchset_module
from haproxy_sync.apply import read_running
from haproxy_sync.catalog import Service, Snapshot
from haproxy_sync.config import Settings, load_settings
from haproxy_sync.consul import WatchStatus, health_query
from haproxy_sync.daemon import Daemon, Outcome, RunningState
from haproxy_sync.metrics import Metrics, StateView
from haproxy_sync.routing import routing_for

HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
    "srv_check_addr srv_agent_addr srv_agent_port"
)


def line(backend: str = "web", name: str = "slot1", address: str = "10.0.0.1", op: str = "2", admin: str = "0",
         weight: str = "1", port: str = "9001", extra: str = "- 0 0 - - 0") -> str:
    """A server line as HAProxy 2.6 writes it (25 columns; haproxy-sync reads the first 19)."""
    return f"3 {backend} 1 {name} {address} {op} {admin} {weight} 1 5 6 3 4 6 0 0 0 - {port} {extra}".rstrip()


def answer(*lines: str) -> str:
    return "1\n" + HEADER + "\n" + "".join(f"{x}\n" for x in lines) + "\n"


# --- parse_servers_state ---


def test_a_sane_answer_parses() -> None:
    states = haproxy.parse_servers_state(answer(line(), line(name="slot2", op="0", admin="5", weight="0", port="0")))
    assert [(s.backend, s.name, s.address, s.port, s.operational, s.admin, s.weight) for s in states] == [
        ("web", "slot1", "10.0.0.1", 9001, 2, 0, 1), ("web", "slot2", "10.0.0.1", 0, 0, 5, 0)]


def test_columns_beyond_the_ones_read_still_parse() -> None:
    # HAProxy 3.x may add columns at the end (and already writes more than the 19 read).
    longer = line(extra="- 0 0 - - 0 some-new-column 42 - x:y")
    assert haproxy.parse_servers_state(answer(longer))[0].port == 9001
    exact = " ".join(line().split()[:19])
    assert haproxy.parse_servers_state(answer(exact))[0].weight == 1


HOSTILE_LINES = {
    "non_numeric_state": line(op="UP"),
    "non_numeric_admin": line(admin="0x01"),
    "unicode_digit_weight": line(weight="\u0662"),  # ARABIC-INDIC DIGIT TWO: int() says 2
    "unicode_digit_port": line(port="\uff19\uff10"),  # FULLWIDTH 9 0
    "signed": line(weight="+1"),
    "underscored": line(port="9_001"),  # int() takes it
    "too_long": line(weight="12345678901"),
    "non_numeric_port": line(port="-"),
    "short": "3 web 1 slot1 10.0.0.1 2 0 1",
    "one_word": "garbage",
    "vertical_tab": line(address="10.0.0.1\x0b9"),  # str.split() would split here, HAProxy not
    "file_separator": line(name="slot1\x1c"),
    "escape": line(address="10.0.0.1\x1b[2J"),
    "carriage_return": line() + "\r",
    "nel": line(address="10.0.0.1\x85"),
}


@pytest.mark.parametrize("bad", HOSTILE_LINES.values(), ids=HOSTILE_LINES.keys())
def test_one_unparsable_server_line_fails_the_whole_answer(bad: str) -> None:
    with pytest.raises(haproxy.SocketError) as caught:
        haproxy.parse_servers_state(answer(line(), bad, line(name="slot3")))
    message = str(caught.value)
    assert message.startswith("unexpected `show servers state` answer: ")
    assert repr(bad[:120]) in message, "names the line"


def test_the_line_named_is_cut_to_120_characters() -> None:
    bad = line(op="x" * 500)
    with pytest.raises(haproxy.SocketError) as caught:
        haproxy.parse_servers_state(answer(bad))
    assert repr(bad[:120]) in str(caught.value) and "x" * 121 not in str(caught.value)


@pytest.mark.parametrize("first", ["", "Unknown command\n", "\u0661\n", "+1\n", "1 2\n", "-\n"])
def test_the_first_line_must_be_a_version_number(first: str) -> None:
    with pytest.raises(haproxy.SocketError, match="unexpected `show servers state` answer"):
        haproxy.parse_servers_state(first + HEADER + "\n" + line() + "\n")


def test_servers_that_are_not_ours_are_skipped() -> None:
    states = haproxy.parse_servers_state(answer(
        line(backend="we$b"), line(name="x" * 101), line(backend="other", name="srv1"), line()))
    assert [(s.backend, s.name) for s in states] == [("other", "srv1"), ("web", "slot1")]


def test_comments_and_blank_lines_are_ignored() -> None:
    text = "1\n" + HEADER + "\n\n# anything\x1b at all\n   \n" + line() + "\n\n"
    assert len(haproxy.parse_servers_state(text)) == 1


# --- filter_server_state: what HAProxy will load ---


def test_the_filter_never_writes_a_line_that_does_not_parse() -> None:
    good = [line(), line(name="slot2", port="0")]
    tricks = [
        *HOSTILE_LINES.values(),
        "# a comment\r" + line(name="slot9"),  # HAProxy reads one line here; Python's splitlines two
        line(name="slot8") + "\x0c" + line(name="slot7"),
        line(backend="we$b"),
    ]
    text = "1\n" + HEADER + "\n" + "\n".join([good[0], *tricks, good[1]]) + "\n"
    kept = haproxy.filter_server_state(text, lambda state: True)
    written = kept.split("\n")
    assert written == ["1", HEADER, *good, ""], written
    assert haproxy.parse_servers_state(kept), "what is written reads back whole"


def test_the_filter_keeps_only_what_keep_accepts() -> None:
    text = answer(line(), line(name="slot2"), line(name="slot3"))
    kept = haproxy.filter_server_state(text, lambda state: state.name != "slot2")
    assert [x.split()[3] for x in kept.splitlines()[2:]] == ["slot1", "slot3"]


def test_save_server_state_writes_nothing_from_a_garbled_answer(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(haproxy, "socket_command", lambda *args, **kwargs: answer(line(), line(op="\u0662")))
    target = tmp_path / "server-state"
    assert haproxy.save_server_state(tmp_path / "admin.sock", target) is False
    assert not target.exists()


# --- the daemon ---


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[consul]\nbackoff_max = "1s"\n[haproxy]\nconfig_path = "{tmp_path / "haproxy.cfg"}"\n'
        f'stats_socket = "{tmp_path / "admin.sock"}"\nserver_state_file = "{tmp_path / "state"}"\n'
        f'routes_map = "{tmp_path / "routes.map"}"\n[sync]\nwait_min = "1ms"\nwait_max = "5ms"\n'
        '[[services]]\nname = "web"\n')
    return load_settings(path, env={})


def test_a_garbled_answer_is_a_socket_error_for_the_daemon(settings: Settings, monkeypatch) -> None:
    garbled = answer(line(), line(weight="one"))
    monkeypatch.setattr(haproxy, "socket_command", lambda *args, **kwargs: garbled)
    with pytest.raises(haproxy.SocketError):
        read_running(settings.haproxy.stats_socket, "web")

    async def reconcile() -> None:
        daemon = Daemon(settings)
        daemon.runs = RunningState(Snapshot(), {}, routing_for(settings, {}), "")  # HAProxy runs an empty plan
        await daemon._reconcile()  # logs a warning and returns, ready for the next try

    asyncio.run(reconcile())


def run_loop(settings: Settings, failures: list[BaseException]) -> tuple[Daemon, int]:
    """Run the daemon's loop over apply cycles that raise ``failures`` in turn, then one that succeeds."""
    calls = 0

    async def scenario() -> Daemon:
        daemon = Daemon(settings)
        daemon.latest["web"] = Service("web")

        async def apply_once() -> Outcome:
            nonlocal calls
            calls += 1
            if calls <= len(failures):
                raise failures[calls - 1]
            daemon.request_stop()
            return Outcome(True, "fine")

        daemon._apply_once = apply_once  # type: ignore[method-assign]
        daemon._changed = True
        daemon._wake.set()
        await asyncio.wait_for(daemon._loop(), 20)
        return daemon

    return asyncio.run(scenario()), calls


def test_an_unexpected_error_in_a_cycle_is_one_line_and_the_loop_goes_on(settings: Settings, caplog) -> None:
    caplog.set_level(logging.INFO)
    daemon, calls = run_loop(settings, [ValueError("invalid literal for int() with base 10: 'x\\n'")])
    assert calls == 2, "the loop went on and applied after the backoff"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "ValueError" in message and "invalid literal for int()" in message and "retrying in" in message
    assert not any(r.exc_info for r in caplog.records), "no traceback below debug"
    failed = daemon.metrics.registry.get_sample_value("haproxy_sync_apply_failures_total", {"stage": "unexpected"})
    assert failed == 1


def test_the_traceback_is_logged_at_debug(settings: Settings, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    _, calls = run_loop(settings, [KeyError("boom"), RuntimeError("again")])
    assert calls == 3
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2
    traced = [r for r in caplog.records if r.exc_info]
    assert len(traced) == 2 and all(r.levelno == logging.DEBUG for r in traced)


# --- series of services that come and go ---


def series(metrics: Metrics) -> list[str]:
    return [x for x in metrics.exposition().decode().splitlines() if x.startswith("haproxy_sync_") and "{" in x]


def test_forget_service_removes_every_series_of_the_service() -> None:
    metrics = Metrics(StateView)
    for name in ("web", "catalog", *(f"branch-{i}" for i in range(500))):
        for kind in ("timeout", "unreachable", "bad_answer"):
            metrics.consul_errors.labels(name, kind).inc()
        for outcome in ("held", "applied", "recovered"):
            metrics.guard.labels(name, outcome).inc()
    before = len(series(metrics))
    for i in range(500):
        metrics.forget_service(f"branch-{i}")
    left = series(metrics)
    assert not [x for x in left if 'service="branch-' in x]
    assert {x.split('service="')[1].split('"')[0] for x in left if 'service="' in x} == {"web", "catalog"}
    assert len(left) < before / 20
    for name in ("web", "catalog"):
        assert metrics.registry.get_sample_value(
            "haproxy_sync_consul_errors_total", {"service": name, "kind": "timeout"}) == 1
        assert metrics.registry.get_sample_value(
            "haproxy_sync_guard_total", {"service": name, "outcome": "held"}) == 1
    metrics.forget_service("no-such-service")  # nothing to remove is fine


class FakeWatch:
    """Stands in for consul.ServiceWatch: never talks to Consul; the test plays its errors."""

    def __init__(self, client: object, service: str, on_update: object, *, tag: str = "",
                 filter_expression: str = "", on_error: Any = None, policy: Any = None, **_: object) -> None:
        self.service, self.on_error, self.policy = service, on_error, policy
        self.query = health_query(tag, filter_expression)
        self.status, self.skipped = WatchStatus(), ()

    async def run(self) -> None:
        await asyncio.Event().wait()


def test_series_of_discovered_services_go_when_their_watch_stops(settings: Settings, monkeypatch) -> None:
    monkeypatch.setattr(watchset_module, "ServiceWatch", FakeWatch)

    async def scenario() -> Metrics:
        daemon = Daemon(settings)
        daemon._client = cast(Any, object())  # FakeWatch never uses the client
        for round_ in range(100):  # 100 rounds of 5 branches that come, fail, get guarded and go
            daemon.discovered = frozenset(f"branch-{round_}-{i}" for i in range(5))
            daemon._sync_watches()
            for name, watch in daemon.watches.services():
                watch.on_error(name, "timeout")  # type: ignore[attr-defined]
                daemon.metrics.guard.labels(name, "held").inc()
        daemon.discovered = frozenset()
        daemon._sync_watches()
        assert daemon.watches.names() == {"web"}, "the configured service keeps its watch"
        await daemon.watches.close()
        return daemon.metrics

    metrics = asyncio.run(scenario())
    left = series(metrics)
    assert not [x for x in left if "branch-" in x], [x for x in left if "branch-" in x][:5]
    assert metrics.registry.get_sample_value(
        "haproxy_sync_consul_errors_total", {"service": "web", "kind": "timeout"}) == 100, "web keeps its series"
    assert metrics.registry.get_sample_value("haproxy_sync_guard_total", {"service": "web", "outcome": "held"}) == 100


STAT_HEADER = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
               "status,weight,act")
CONN_HEADER = ("# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb safe_nb "
               "idle_lim idle_cur idle_per_thr[2]")


def test_drain_readings_are_allowlisted_and_name_only_the_asked_backend() -> None:
    stats = (f"{STAT_HEADER}\nweb,slot1,0,0,2,3,,9,0,0,,0,,0,0,0,0,UP,0,1,\n"
             "web,slot2,0,0,0,3,,9,0,0,,0,,0,0,0,0,UP,0,1,\nother,slot1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,0,1,\n"
             "web,bad name!,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,0,1,\n\n")
    assert drains.parse_stat_servers(stats, "web") == {"slot1": (0, 0, 2), "slot2": (0, 0, 0)}
    conns = (f"{CONN_HEADER}\nweb/slot1 3/1 10.0.0.1 9001 - 5000 1 1 0 0 0 -1 0 0 0\n"
             "web/slot2 3/2 10.0.0.2 9002 - 5000 0 1 0 0 0 -1 2 1 1\n"
             "other/slot1 4/1 10.0.0.3 1 - 5000 7 0 0 0 0 -1 0 0 0\n")
    assert drains.parse_servers_conn(conns, "web") == {"slot1": 1, "slot2": 0}
    assert not drains.ServerLoad(0, 0, 2, 1).idle and drains.ServerLoad(0, 0, 0, 0).idle
    assert not drains.ServerLoad(1, 0, 0, 0).idle, "weight above 0: new requests can still come"
    assert not drains.ServerLoad(0, 1, 0, 0).idle, "a queued request is still to be served"


@pytest.mark.parametrize("text", [
    "", "Unknown command\n", "# pxname,svname\nweb,slot1\n",
    f"{STAT_HEADER}\nweb,slot1,0,0,\u0662,3,,9,0,0,,0,,0,0,0,0,UP,0,1,\n",
    f"{STAT_HEADER}\nweb,slot1,0,0,+2,3,,9,0,0,,0,,0,0,0,0,UP,0,1,\n",
    f"{STAT_HEADER}\nweb,slot1,0,0,0,3,,9,0,0,,0,,0,0,0,0,UP\n",
    f"{STAT_HEADER}\nweb,slot1,0,0,0,3,,9,0,0,,0,,0,0,0,0,UP,0,1,\x1b[2J\n",
])
def test_a_stat_answer_that_does_not_parse_is_a_socket_error(text: str) -> None:
    with pytest.raises(haproxy.SocketError, match="show stat"):
        drains.parse_stat_servers(text, "web")


@pytest.mark.parametrize("text", [
    "", "# bkname/svname bkid/svid addr port\nweb/slot1 3/1 1.2.3.4 1\n",
    f"{CONN_HEADER}\nweb/slot1 3/1 10.0.0.1 9001 - 5000 -1 1 0 0 0 -1 0 0 0\n",
    f"{CONN_HEADER}\nweb/slot1 3/1 10.0.0.1 9001 - 5000\n",
    f"{CONN_HEADER}\nweb/slot1\u00a03/1 10.0.0.1 9001 - 5000 0 1 0 0 0 -1 0 0 0\n",
])
def test_a_servers_conn_answer_that_does_not_parse_is_a_socket_error(text: str) -> None:
    with pytest.raises(haproxy.SocketError, match="show servers conn"):
        drains.parse_servers_conn(text, "web")


DUMP = ("#fe guid,stot,bin,bout,\nfe:http,8,656,4704,\n\n#be guid,stot,bin,lastsess,\n"
        "srv:web:slot1,3,246,-1,\nbe:web,3,246,5,\n\n")


def test_a_stats_dump_is_written_only_when_every_line_is_one_haproxy_loads() -> None:
    assert stats_file.stats_dump_problem(DUMP) is None
    for bad in ["", "\n\n", DUMP + "global\n", DUMP + "srv:web:slot1,3,x,\n", DUMP.replace("#be", "# be"),
                DUMP + "srv web,1,\n", DUMP + "fe:http,1\r\n", DUMP + "Unknown command.\n"]:
        assert stats_file.stats_dump_problem(bad) is not None, bad


def test_the_version_is_read_from_haproxy_v() -> None:
    assert haproxy.parse_version("HAProxy version 3.0.11-9e587df 2025/06/02 - https://haproxy.org/") == (3, 0, 11)
    assert haproxy.parse_version("HAProxy version 2.6.12-1+deb12u4 2026/10/17") == (2, 6, 12)
    assert haproxy.parse_version("HA-Proxy version 1.8.19 2019/02/11") == (1, 8, 19)
    assert haproxy.parse_version("HAProxy version 3.1-dev4") == (3, 1, 0)
    assert haproxy.parse_version("no version here") is None
    assert haproxy.Features((3, 0, 11)).stats_file and not haproxy.Features((2, 6, 12)).stats_file
    assert not haproxy.Features().stats_file and haproxy.Features().version_text == "unknown"
