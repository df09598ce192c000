from __future__ import annotations

import json
import logging

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
    assert line.split(" ", 1)[1] == "level=warning applied cabify: 7 servers\n"
    assert line[:4].isdigit() and line[19] == "."


def test_json_lines_parse(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    record = json.loads(emit(capsys, "json"))
    assert record["level"] == "warning" and record["msg"] == "applied cabify: 7 servers" and "ts" in record


def test_journald_gets_priority_prefix_and_no_timestamp(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert emit(capsys, "text") == "<4>level=warning applied cabify: 7 servers\n"
    record = emit(capsys, "json")
    assert record.startswith("<4>{") and "ts" not in json.loads(record[3:])


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
