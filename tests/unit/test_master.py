"""The master's answers: ``reload`` as HAProxy 3.0.11 and 2.6.12 gave it here (captured verbatim), and a
reload judged by ``show proc`` when the clock alone would call a slow one failed."""

from __future__ import annotations

import pytest

from haproxy_sync.master import ProcInfo, ReloadPhase, descriptors_asked, judge_reload, parse_reload_answer
from haproxy_sync.reasons import ReloadFailure

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
FD_LIMIT_30 = (  # global maxconn 700000 under a hard limit of 20,000 files
    "Success=0\n--\n[NOTICE]   (15560) : haproxy version is 3.0.11-9e587df\n"
    "[NOTICE]   (15560) : path to executable is /opt/haproxy\n"
    "[ALERT]    (15560) : [/opt/haproxy.main()] Cannot raise FD limit to 1400053, limit is 20000.\n"
    "[WARNING]  (15560) : Loading failure!\n\n"
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


def test_haproxys_own_descriptor_limit_is_its_own_failure() -> None:
    answer = parse_reload_answer(FD_LIMIT_30)
    assert answer is not None and answer.failure is ReloadFailure.FD_LIMIT
    assert "Cannot raise FD limit to 1400053, limit is 20000" in answer.reason
    bind = parse_reload_answer(BIND_FAILURE_30)
    assert bind is not None and bind.failure is ReloadFailure.REJECTED


BEFORE = ProcInfo(100, 3, 0, ((200, 0),))


@pytest.mark.parametrize(("after", "alive", "phase"), [
    (None, True, ReloadPhase.LOADING),  # 2.6 and 3.0 close the master CLI while the master re-executes
    (None, None, ReloadPhase.LOADING),  # the master's process cannot be seen from here: its CLI is trusted
    (None, False, ReloadPhase.MASTER_GONE),
    (BEFORE, True, ReloadPhase.NOT_STARTED),
    (ProcInfo(100, 4, 0, ((200, 1),)), True, ReloadPhase.LOADING),  # re-executed, the new worker not forked
    (ProcInfo(100, 4, 0, ((201, 0), (200, 1))), True, ReloadPhase.CONFIRMED),
    (ProcInfo(100, 4, 1, ((200, 1),)), True, ReloadPhase.FAILED),
    (ProcInfo(300, 0, 0, ((301, 0),)), True, ReloadPhase.CONFIRMED),  # restarted: the new master read the file
    (ProcInfo(300, 0, 0, ()), True, ReloadPhase.LOADING),
])
def test_a_reload_is_judged_by_what_the_master_says(after: ProcInfo | None, alive: bool | None,
                                                    phase: ReloadPhase) -> None:
    assert judge_reload(BEFORE, after, alive) is phase


def test_the_descriptors_a_config_asks_for_are_read_from_its_global_section_only() -> None:
    assert descriptors_asked("global\n  maxconn 700000\ndefaults\n  maxconn 10\n") == 1_400_000
    assert descriptors_asked("global\n  maxconn 5000\n  ulimit-n 65536 # fixed\n") == 65_536
    assert descriptors_asked("global\n  log stderr local0\nfrontend f\n  maxconn 900000\n") is None
    assert descriptors_asked("global\n  maxconn ${MAXCONN}\n") is None
