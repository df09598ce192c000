"""A restart over a live config haproxy-sync cannot take over as it is (a hand edit, a truncated file,
a line HAProxy dropped): the whole config is laid out anew, never patched, and converges."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import DaemonProcess, Stack, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


def _slot_line(text: str, index: int) -> str:
    return next(line for line in text.splitlines() if re.match(rf"\s*server slot{index} ", line))


def _swap_addresses(text: str) -> str:
    one, two = _slot_line(text, 1), _slot_line(text, 2)
    address = re.compile(r"server (slot\d+) (\S+)")
    a, b = address.search(one), address.search(two)
    assert a and b
    return text.replace(one, one.replace(a.group(2), b.group(2))).replace(two, two.replace(b.group(2), a.group(2)))


DAMAGES: dict[str, Callable[[str], str]] = {
    "gap": lambda t: t.replace(_slot_line(t, 2), _slot_line(t, 2).replace("slot2 ", "slot9 ")),
    "duplicate": lambda t: t.replace(_slot_line(t, 1), _slot_line(t, 1) + "\n" + _slot_line(t, 1)),
    "hand_added_server": lambda t: t.replace(_slot_line(t, 1), _slot_line(t, 1) + "\n    server extra 127.0.0.1:9"),
    "missing_slot": lambda t: t.replace(_slot_line(t, 1) + "\n", ""),
    "truncated": lambda t: t[: len(t) // 2],
    "backend_twice": lambda t: t + t[t.index("\nbackend cabify"):],
    "weight_out_of_range": lambda t: t.replace(_slot_line(t, 1), re.sub(r"weight \d+", "weight 999", _slot_line(t, 1))),
    "port_zero": lambda t: t.replace(_slot_line(t, 1), re.sub(r":\d+ ", ":0 ", _slot_line(t, 1), count=1)),
    "slot_zero": lambda t: t.replace(_slot_line(t, 1), _slot_line(t, 1).replace("slot1 ", "slot0 ")),
    "huge_index": lambda t: t.replace(_slot_line(t, 3), _slot_line(t, 3).replace("slot3 ", "slot99999 ")),
    "addresses_swapped": _swap_addresses,  # the file parses, but HAProxy runs something else
    "empty": lambda t: "",
    "garbage": lambda t: "\x00\xff\ufffd" * 100,
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_live_config_is_laid_out_anew_and_converges(tmp_path: Path, consul: DevConsulThread,
                                                               make_apps, damage: str) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(3), exits)
        stack.daemon.stop()
        cfg = stack.layout.haproxy_cfg
        cfg.write_text(DAMAGES[damage](cfg.read_text()))
        daemon = DaemonProcess(stack.layout.config_toml, tmp_path / "restart.log")
        exits.callback(daemon.stop)
        daemon.wait_for_log("applied ", timeout=30)
        text = cfg.read_text()
        haproxy.validate(haproxy.find_binary("haproxy") or "haproxy", cfg)
        slots = [int(n) for n in re.findall(r"^\s*server slot(\d+) ", text, re.M)]
        assert sorted(slots) == list(range(1, len(slots) + 1)), "slot1..N, each once"
        wait_until(lambda: stack.serving() == {app.instance_id for app in stack.apps}, 15, what="every instance served")
        running = {s.name for s in stack.layout.servers()}
        assert running == {f"slot{n}" for n in slots}, "HAProxy runs exactly the file's servers"
        log = daemon.log()
        assert "Traceback" not in log
        if damage not in ("empty", "garbage", "truncated"):
            assert "cannot be taken over as it is" in log, log[-2000:]
