"""The master CLI's answer to `reload`, as HAProxy 3.0.11 and 2.6.12 gave it here (captured verbatim)."""

from __future__ import annotations

from haproxy_sync.haproxy import parse_reload_answer

SUCCESS_30 = (
    "Success=1\n--\n[NOTICE]   (29977) : New worker (29995) forked\n[NOTICE]   (29977) : Loading success.\n"
    "[NOTICE]   (29977) : haproxy version is 3.0.11-9e587df\n"
    "[NOTICE]   (29977) : path to executable is /opt/haproxy\n"
    "[WARNING]  (29977) : Former worker (29982) exited with code 0 (Exit)\n\n"
)
BIND_FAILURE_30 = (
    "Success=0\n--\n[NOTICE]   (10335) : haproxy version is 3.0.11-9e587df\n"
    "[NOTICE]   (10335) : path to executable is /opt/haproxy\n"
    "[ALERT]    (10335) : Binding [/tmp/probe/h2.cfg:11] for frontend f: protocol tcpv4: cannot bind socket "
    "(Address already in use) for [127.0.0.1:39012].\n"
    "[ALERT]    (10335) : [/opt/haproxy.main()] Some protocols failed to start their listeners! Exiting.\n"
    "[WARNING]  (10335) : Loading failure!\n\n"
)


def test_success_and_failure_are_read_with_haproxys_own_reason() -> None:
    ok = parse_reload_answer(SUCCESS_30)
    assert ok is not None and ok.success and "[NOTICE] Loading success." in ok.messages
    failed = parse_reload_answer(BIND_FAILURE_30)
    assert failed is not None and not failed.success
    assert failed.reason.startswith("Binding [/tmp/probe/h2.cfg:11] for frontend f: protocol tcpv4: cannot bind")
    assert "Some protocols failed" in failed.reason and "(10335)" not in failed.reason


def test_haproxy_26_answers_nothing_and_that_is_not_a_result() -> None:
    assert parse_reload_answer("") is None
    assert parse_reload_answer("\n") is None
    assert parse_reload_answer("Unknown command: 'reload'\n") is None


def test_a_hostile_answer_stays_one_printable_bounded_line() -> None:
    answer = parse_reload_answer("Success=0\n--\n[ALERT] (1) : x\x1b[2J\x00" + "y" * 5000 + "\n")
    assert answer is not None and not answer.success
    assert answer.reason.isprintable() and len(answer.reason) <= 500
