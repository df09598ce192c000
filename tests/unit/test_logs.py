from __future__ import annotations

import json
import logging
import os
import socket
import struct
import sys

import pytest

from haproxy_sync import logs


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(capsys: pytest.CaptureFixture[str], fmt: str) -> str:
    logs.configure("info", fmt)
    logging.getLogger("haproxy_sync.test").warning("applied %s", "cabify: 7 servers")
    logging.getLogger("haproxy_sync.test").debug("not shown at info")
    return capsys.readouterr().err


def test_text_lines_carry_time_and_level(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    line = emit(capsys, "text")
    assert line.count("\n") == 1
    assert line.split(" ", 1)[1] == "level=warning event=test applied cabify: 7 servers\n"
    assert line[:4].isdigit() and line[19] == "."


def test_json_lines_parse(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    record = json.loads(emit(capsys, "json"))
    assert record["level"] == "warning" and record["msg"] == "applied cabify: 7 servers" and "ts" in record
    assert record["event"] == "test", "a line without an event is named after its module"


def test_journald_gets_priority_prefix_and_no_timestamp(journal_stream) -> None:
    lines = journal_stream
    assert lines("text") == "<4>level=warning event=test applied cabify: 7 servers\n"
    record = lines("json")
    assert record.startswith("<4>{") and "ts" not in json.loads(record[3:])


def test_a_journal_stream_that_is_not_stderr_is_not_journald(capsys, monkeypatch) -> None:
    """A shell started from the unit's environment inherits JOURNAL_STREAM with its stderr elsewhere."""
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert emit(capsys, "text").split(" ", 1)[1] == "level=warning event=test applied cabify: 7 servers\n"


@pytest.fixture
def journal_stream(tmp_path, monkeypatch):
    """stderr as a real file that JOURNAL_STREAM names, as systemd connects it; yields a reader."""
    path = tmp_path / "stderr"
    handle = path.open("w+")
    monkeypatch.setattr(sys, "stderr", handle)
    st = os.fstat(handle.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    monkeypatch.setenv("HAPROXY_SYNC_JOURNAL_SOCKET", str(tmp_path / "no-journal-here"))

    def lines(fmt: str) -> str:
        monkeypatch.setattr(sys, "stderr", handle)  # pytest's capture puts its own back at each phase
        handle.seek(0)
        handle.truncate()
        logs.configure("info", fmt)
        logging.getLogger("haproxy_sync.test").warning("applied %s", "cabify: 7 servers")
        handle.flush()
        return path.read_text()

    yield lines
    for handler in logging.getLogger().handlers:
        handler.close()
    handle.close()


def test_events_carry_their_fields_in_both_formats(capsys, monkeypatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logs.configure("info", "text")
    fields = logs.event("apply.done", service="cabify", instance="web 1\nlevel=error", path="runtime",
                        duration_ms=3.5, reason=None)
    logging.getLogger("haproxy_sync.daemon").info("applied %s", "cabify: 2 servers", extra=fields)
    line = capsys.readouterr().err
    assert line.count("\n") == 1
    assert line.split(" ", 1)[1] == ('level=info event=apply.done applied cabify: 2 servers service=cabify '
                                     'instance="web 1\\nlevel=error" path=runtime duration_ms=3.5\n'), line
    logs.configure("info", "json")
    logging.getLogger("haproxy_sync.daemon").info("applied %s", "cabify: 2 servers", extra=fields)
    record = json.loads(capsys.readouterr().err)
    assert {k: record[k] for k in ("event", "service", "instance", "path", "duration_ms")} == {
        "event": "apply.done", "service": "cabify", "instance": "web 1\nlevel=error", "path": "runtime",
        "duration_ms": 3.5}
    assert "reason" not in record, "a None field is left out"


def test_a_field_outside_the_list_is_a_bug_at_the_call_site() -> None:
    with pytest.raises(TypeError, match=r"not in logs\.FIELDS"):
        logs.event("apply.done", servcie="cabify")


def parse_datagram(data: bytes) -> dict[str, str]:
    """journald's side of the native protocol."""
    fields, rest = {}, data
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:
            (size,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8:8 + size].decode()
            rest = after[8 + size + 1:]
    return fields


def test_under_journald_each_record_is_a_native_journal_entry(tmp_path, monkeypatch, journal_stream) -> None:
    lines = journal_stream
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(tmp_path / "journal.sock"))
    journal.settimeout(2)
    try:
        monkeypatch.setenv("HAPROXY_SYNC_JOURNAL_SOCKET", str(tmp_path / "journal.sock"))
        assert lines("text") == "", "stderr is the journal stream and journald listens: nothing on stderr"
        assert parse_datagram(journal.recv(65536))["MESSAGE"] == "applied cabify: 7 servers"
        logging.getLogger("haproxy_sync.consul").error(
            "consul watch service=%s failing", "web", extra=logs.event("consul.failing", service="web", delay_s=0.5,
                                                                      error="line one\nline two"))
        entry = parse_datagram(journal.recv(65536))
        assert entry == {"MESSAGE": "consul watch service=web failing", "PRIORITY": "3",
                         "SYSLOG_IDENTIFIER": "haproxy-sync", "EVENT": "consul.failing",
                         "LOGGER": "haproxy_sync.consul",
                         "SERVICE": "web", "DELAY_S": "0.5", "ERROR": "line one\nline two"}
        journal.close()  # journald gone: the line goes to stderr with its priority prefix instead
        assert lines("text") == "<4>level=warning event=test applied cabify: 7 servers\n"
    finally:
        journal.close()


def test_a_fatal_line_is_plain_on_a_terminal_and_formatted_for_machines(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logs.configure("info", "text")
    logs.fatal("config: consul.address: 'x' is not a URL", "config.invalid")
    assert capsys.readouterr().err == "haproxy-sync: config: consul.address: 'x' is not a URL\n"
    logs.configure("info", "json")
    logs.fatal("config: bad", "config.invalid")
    record = json.loads(capsys.readouterr().err)
    assert (record["level"], record["event"], record["msg"]) == ("error", "config.invalid", "config: bad")


@pytest.mark.parametrize("forged", ["web-1\n2026-12-01T00:00:00.000Z level=error HAProxy is down",
                                    "x\r\nlevel=info y", "a\u2028b", "a\x85b", "a\x1b[2Jb", "a\x00b"])
def test_no_value_can_start_a_text_line_of_its_own(capsys: pytest.CaptureFixture[str], monkeypatch,
                                                   forged: str) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logs.configure("info", "text")
    logging.getLogger("haproxy_sync.test").warning("skipped instance id=%s reason=%r", forged, forged)
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and out.endswith("\n")
    assert not any(ch in out[:-1] for ch in "\r\x00\x1b\x85\u2028"), out
    logs.configure("info", "json")
    logging.getLogger("haproxy_sync.test").warning("skipped instance id=%s", forged)
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and json.loads(line)["msg"] == f"skipped instance id={forged}"


def test_bidi_controls_are_escaped_in_text_lines(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logs.configure("info", "text")
    logging.getLogger("haproxy_sync.test").warning("id=%s", "evil\u202egnp.exe")
    out = capsys.readouterr().err
    assert "\u202e" not in out and "\\u202e" in out
