"""The running claim and the master's ``show proc``: what lets a restart know HAProxy runs the live
config without ``/proc``, and what makes it reload rather than trust a record it cannot."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from haproxy_sync import master, running_claim
from haproxy_sync.running_claim import Claim

SHOW_PROC_26 = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
13182           master          2 [failed: 0]   0d00h05m01s     2.6.12-1+deb12u4
# workers
13200           worker          0               1d02h03m04s     2.6.12-1+deb12u4
13190           worker          1               0d00h09m00s     2.6.12-1+deb12u4
# programs
"""


def test_the_current_workers_uptime_is_read_from_show_proc() -> None:
    proc = master.parse_show_proc(SHOW_PROC_26)
    assert (proc.master_pid, proc.current_worker) == (13182, 13200)
    assert proc.current_uptime == ((1 * 24 + 2) * 60 + 3) * 60 + 4


def test_a_worker_started_after_the_file_was_written_runs_it() -> None:
    proc = master.ProcInfo(1, 0, 0, ((2, 0),), current_uptime=10.0)
    now = 1000.0
    assert running_claim.started_after(proc, file_mtime=now - 60, now=now, start_time=None)
    assert not running_claim.started_after(proc, file_mtime=now - 11, now=now, start_time=None), "too close to tell"
    assert not running_claim.started_after(master.ProcInfo(1, 0, 0, ((2, 0),)), now - 60, now, None), "no uptime"
    assert running_claim.started_after(proc, file_mtime=now - 11, now=now, start_time=now - 10.5), "/proc tells"
    assert not running_claim.started_after(proc, file_mtime=now - 60, now=now, start_time=now - 61), "older worker"


def test_a_running_workers_start_comes_from_proc_and_a_hidden_one_is_none() -> None:
    started = master.process_start_time(os.getpid())
    assert started is not None and 0 <= time.time() - started < 3600
    assert master.process_start_time(2**22 + 5) is None


def test_a_claim_vouches_only_for_the_same_processes_and_text() -> None:
    claim = Claim(10, 11, running_claim.digest("config"))
    proc = master.ProcInfo(10, 3, 0, ((11, 0), (9, 1)))
    assert claim.vouches(proc, "config")
    assert not claim.vouches(proc, "config\n")
    assert not claim.vouches(master.ProcInfo(10, 4, 0, ((12, 0), (11, 1))), "config"), "a newer worker"
    assert not claim.vouches(master.ProcInfo(99, 0, 0, ((11, 0),)), "config"), "another master"


def test_a_written_claim_reads_back(tmp_path: Path) -> None:
    state = tmp_path / "server-state"
    claim = Claim(10, 11, running_claim.digest("config"))
    running_claim.write_claim(state, claim)
    assert running_claim.read_claim(state) == claim
    assert running_claim.claim_path(state).stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("text", [
    "",
    "[]",
    json.dumps({"master_pid": 1, "worker_pid": 2}),
    json.dumps({"master_pid": 1, "worker_pid": 2, "config_sha256": "A" * 64}),
    json.dumps({"master_pid": 1, "worker_pid": 2, "config_sha256": "0" * 63}),
    json.dumps({"master_pid": 1.0, "worker_pid": 2, "config_sha256": "0" * 64}),
    json.dumps({"master_pid": "1", "worker_pid": 2, "config_sha256": "0" * 64}),
    json.dumps({"master_pid": 0, "worker_pid": 2, "config_sha256": "0" * 64}),
    json.dumps({"master_pid": 1 << 40, "worker_pid": 2, "config_sha256": "0" * 64}),
    json.dumps({"master_pid": 1, "worker_pid": 2, "config_sha256": "0" * 64, "more": 1}),
])
def test_a_claim_of_the_wrong_shape_is_ignored(tmp_path: Path, text: str) -> None:
    assert running_claim.parse_claim(text) is None
    state = tmp_path / "server-state"
    running_claim.claim_path(state).write_text(text)
    assert running_claim.read_claim(state) is None
