"""Growing a backend by ``add server``: the new slot gets the options (and on 3.0 the guid) the rendered
config gives it, and what HAProxy would refuse for a dynamic server becomes a reason, never a command."""

from __future__ import annotations

from haproxy_sync import dynamic
from haproxy_sync.plan import Slot
from haproxy_sync.reasons import ReloadKind, ReloadReason

CONFIG = """\
defaults
    default-server inter 2s fall 3 rise 2 init-addr last,libc,none

backend web
    balance {balance}
    server slot1 10.0.0.1:80 check weight 1{guid1}
    server slot2 10.0.0.2:80 check weight 1{guid2} disabled
"""


def render(balance: str = "roundrobin", guid1: str = "", guid2: str = "") -> str:
    return CONFIG.format(balance=balance, guid1=guid1, guid2=guid2)


SLOTS = (Slot(1, ("n", "a"), "10.0.0.1", 80, 1, False), Slot(2, ("n", "b"), "10.0.0.2", 80, 1, False))


def test_a_new_slot_is_added_with_the_options_and_guid_of_its_server_line() -> None:
    text = render(guid1=" guid srv:web:slot1", guid2=" guid srv:web:slot2")
    sequence = dynamic.grow("web", SLOTS, 1, text)
    assert sequence == [
        "add server web/slot2 10.0.0.2:80 inter 2s fall 3 rise 2 check guid srv:web:slot2 weight 1 disabled",
        "enable health web/slot2",
        "set server web/slot2 state ready",
    ]


def test_without_a_guid_the_server_is_added_without_one() -> None:
    (add, *_rest) = dynamic.grow("web", SLOTS, 1, render())
    assert "guid" not in add


def test_what_haproxy_refuses_for_dynamic_servers_is_a_typed_reason() -> None:
    assert dynamic.grow("web", SLOTS, 1, render(balance="source")) == ReloadReason(
        ReloadKind.SLOTS_NO_DYNAMIC, "balance source takes no dynamic servers")
    refused = dynamic.grow("web", SLOTS, 1, render(guid2=" guid srv;web"))
    assert isinstance(refused, ReloadReason) and refused.kind is ReloadKind.SLOTS_NO_DYNAMIC and "guid" in str(refused)
    option = dynamic.grow("web", SLOTS, 1, render(guid2=" backup"))
    assert isinstance(option, ReloadReason) and "not one haproxy-sync passes" in option.text
    assert option.label == "slots_no_dynamic"
    missing = dynamic.grow("other", SLOTS, 1, render())
    assert isinstance(missing, ReloadReason) and missing.kind is ReloadKind.SLOTS
