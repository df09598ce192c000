"""devconsul's KV store against Consul's (api-docs/kv, agent/kvs_endpoint.go, agent/consul/state/kvs.go).

Raw HTTP to a devconsul of each test's own: what a GET, PUT and DELETE answer (bodies, status codes,
messages, X-Consul-Index), CAS, recursion, key listing with a separator, blocking queries on a key and
on a prefix, key ACLs (exact and longest-prefix rules, filtered lists, recursive delete), and a
restart keeping the data. Every wait is bounded.
"""

from __future__ import annotations

import base64
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from haproxy_sync.dev.devconsul import AclConfig, AclToken, DevConsulThread, parse_rules
from tests.integration.devconsul_http import Reply, call

ROOT = "kv-root-secret"




def kv(consul: DevConsulThread, method: str, path: str, body: bytes | None = None, **kwargs: object) -> Reply:
    return call(method, f"{consul.url}/v1/kv/{path}", body, **kwargs)  # type: ignore[arg-type]


def value_of(reply: Reply) -> bytes | None:
    [entry] = reply.json()
    return None if entry["Value"] is None else base64.b64decode(entry["Value"])


# --------------------------------------------------------------------------------------------------
# Reads and writes


def test_put_then_get_answers_consuls_dir_entry(consul: DevConsulThread) -> None:
    put = kv(consul, "PUT", "app/greeting?flags=42", b"hello")
    assert (put.status, put.json()) == (200, True)

    got = kv(consul, "GET", "app/greeting")

    assert got.status == 200
    [entry] = got.json()
    assert set(entry) == {"LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"}
    assert (entry["Key"], entry["Flags"], entry["LockIndex"]) == ("app/greeting", 42, 0)
    assert base64.b64decode(entry["Value"]) == b"hello"
    assert entry["CreateIndex"] == entry["ModifyIndex"] == got.index  # a key's index is its ModifyIndex


def test_raw_answers_the_bare_value_as_text(consul: DevConsulThread) -> None:
    kv(consul, "PUT", "app/page", b"<script>alert(1)</script>")

    raw = kv(consul, "GET", "app/page?raw")

    assert raw.body == b"<script>alert(1)</script>"
    assert raw.headers["content-type"].startswith("text/plain")
    assert raw.headers["x-content-type-options"] == "nosniff"
    assert raw.headers["content-security-policy"] == "sandbox"
    assert raw.index >= 1


def test_an_empty_body_is_a_null_value(consul: DevConsulThread) -> None:
    kv(consul, "PUT", "app/folder/", b"")

    assert value_of(kv(consul, "GET", "app/folder/")) is None
    assert kv(consul, "GET", "app/folder/?raw").body == b""


def test_a_missing_key_is_404_with_an_index(consul: DevConsulThread) -> None:
    empty = kv(consul, "GET", "nope")
    assert (empty.status, empty.body, empty.index) == (404, b"", 1)  # never 0: a blocking query must block

    kv(consul, "PUT", "other", b"x")
    missing = kv(consul, "GET", "nope")

    assert missing.status == 404
    assert missing.index == kv(consul, "GET", "other").index  # the KV tables' index


def test_a_write_of_the_same_value_and_flags_moves_nothing(consul: DevConsulThread) -> None:
    kv(consul, "PUT", "k", b"v")
    first = kv(consul, "GET", "k")
    index = consul.index

    kv(consul, "PUT", "k", b"v")
    assert (kv(consul, "GET", "k").index, consul.index) == (first.index, index)

    kv(consul, "PUT", "k?flags=1", b"v")  # the flags are part of the entry
    assert kv(consul, "GET", "k").index > first.index
    [entry] = kv(consul, "GET", "k").json()
    assert entry["CreateIndex"] == first.index  # an update keeps the CreateIndex


def test_recurse_lists_the_prefix_in_key_order(consul: DevConsulThread) -> None:
    for key in ("app/b", "app/a", "app/c/d", "apples", "other"):
        kv(consul, "PUT", key, key.encode())

    listed = kv(consul, "GET", "app/?recurse")

    assert [entry["Key"] for entry in listed.json()] == ["app/a", "app/b", "app/c/d"]
    assert listed.index == max(entry["ModifyIndex"] for entry in listed.json())
    everything = kv(consul, "GET", "?recurse")
    assert [entry["Key"] for entry in everything.json()] == ["app/a", "app/b", "app/c/d", "apples", "other"]
    assert kv(consul, "GET", "nothing/?recurse").status == 404


def test_keys_with_and_without_a_separator(consul: DevConsulThread) -> None:
    for key in ("app/a", "app/b/c", "app/b/d", "app/e/", "top"):
        kv(consul, "PUT", key, b"x")

    assert kv(consul, "GET", "app/?keys").json() == ["app/a", "app/b/c", "app/b/d", "app/e/"]
    assert kv(consul, "GET", "app/?keys&separator=/").json() == ["app/a", "app/b/", "app/e/"]
    assert kv(consul, "GET", "?keys&separator=/").json() == ["app/", "top"]
    assert kv(consul, "GET", "app/?keys&seperator=/").json() == ["app/a", "app/b/", "app/e/"]  # the old spelling
    assert kv(consul, "GET", "none/?keys").status == 404


def test_keys_of_an_empty_store_are_an_empty_list(consul: DevConsulThread) -> None:
    reply = kv(consul, "GET", "?keys")

    assert (reply.status, reply.json()) == (200, [])


def test_cas_zero_creates_only_and_cas_needs_the_modify_index(consul: DevConsulThread) -> None:
    assert kv(consul, "PUT", "lock?cas=0", b"first").json() is True
    assert kv(consul, "PUT", "lock?cas=0", b"second").json() is False
    assert value_of(kv(consul, "GET", "lock")) == b"first"

    index = kv(consul, "GET", "lock").index
    assert kv(consul, "PUT", f"lock?cas={index + 100}", b"stale").json() is False
    assert kv(consul, "PUT", f"lock?cas={index}", b"third").json() is True
    after = kv(consul, "GET", "lock")
    assert (value_of(after), after.index > index) == (b"third", True)
    assert kv(consul, "PUT", "missing?cas=5", b"x").json() is False  # a CAS on a missing key needs 0


def test_delete_a_key_a_tree_and_with_cas(consul: DevConsulThread) -> None:
    for key in ("a/1", "a/2", "a/b/3", "ab", "c"):
        kv(consul, "PUT", key, b"x")

    assert kv(consul, "DELETE", "c").json() is True
    assert kv(consul, "GET", "c").status == 404
    assert kv(consul, "DELETE", "c").json() is True  # a missing key is no error

    assert kv(consul, "DELETE", "a/?recurse").json() is True
    assert kv(consul, "GET", "?keys").json() == ["ab"]

    index = kv(consul, "GET", "ab").index
    assert kv(consul, "DELETE", f"ab?cas={index + 1}").json() is False
    assert kv(consul, "GET", "ab").status == 200
    assert kv(consul, "DELETE", f"ab?cas={index}").json() is True
    assert kv(consul, "DELETE", "ab?cas=7").json() is True  # kvsDeleteCASTxn: no key counts as deleted
    assert kv(consul, "GET", "?recurse").status == 404


def test_a_deleted_key_keeps_the_prefix_index_from_going_back(consul: DevConsulThread) -> None:
    kv(consul, "PUT", "p/a", b"1")
    kv(consul, "PUT", "p/b", b"2")
    before = kv(consul, "GET", "p/?recurse").index

    kv(consul, "DELETE", "p/b")

    after = kv(consul, "GET", "p/?recurse")
    assert after.index > before  # the tombstone's index, not p/a's older one
    assert [entry["Key"] for entry in after.json()] == ["p/a"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("PUT", "", b"x", 400, "Missing key name"),
        ("GET", "", None, 400, "Missing key name"),
        ("DELETE", "", None, 400, "Missing key name"),
        ("PUT", "k?flags=abc", b"x", 500, 'strconv.ParseUint: parsing "abc": invalid syntax'),
        ("PUT", "k?cas=-1", b"x", 500, 'strconv.ParseUint: parsing "-1": invalid syntax'),
        ("PUT", "k?cas=0&release=s1", b"x", 400, "Conflicting flags: cas=0&release=s1\n"),
        ("DELETE", "k?cas=0&recurse", None, 400, "Conflicting flags: cas=0&recurse=\n"),
        ("PUT", "k?acquire=s1", b"x", 500, 'invalid session "s1"'),  # devconsul has no sessions
        ("GET", "k?dc=elsewhere", None, 500, "No path to datacenter"),
    ],
)
def test_bad_requests_answer_like_consul(
    consul: DevConsulThread, method: str, path: str, body: bytes | None, status: int, message: str
) -> None:
    reply = kv(consul, method, path, body)

    assert (reply.status, reply.text) == (status, message)


def test_release_without_a_session_holding_the_key_is_false(consul: DevConsulThread) -> None:
    kv(consul, "PUT", "k", b"x")

    assert kv(consul, "PUT", "k?release=s1", b"y").json() is False
    assert value_of(kv(consul, "GET", "k")) == b"x"


def test_a_value_over_kv_max_value_size_is_413(consul: DevConsulThread) -> None:
    reply = kv(consul, "PUT", "big", b"x" * (512 * 1024 + 1))

    assert reply.status == 413
    assert reply.text.startswith("Request body(524289 bytes) too large, max size: 524288 bytes.")
    assert kv(consul, "PUT", "fits", b"x" * (512 * 1024)).json() is True


def test_kv_writes_do_not_move_a_services_index(consul: DevConsulThread) -> None:
    assert call("PUT", f"{consul.url}/v1/agent/service/register", {"ID": "web-1", "Name": "web"}).status == 200
    web = call("GET", f"{consul.url}/v1/health/service/web").index

    kv(consul, "PUT", "k", b"x")

    assert consul.index > web
    assert call("GET", f"{consul.url}/v1/health/service/web").index == web


def test_a_restart_keeps_the_keys_and_their_indexes() -> None:
    consul = DevConsulThread().start()
    try:
        kv(consul, "PUT", "kept", b"value")
        before = kv(consul, "GET", "kept")
        consul.stop()
        consul.start()

        after = kv(consul, "GET", "kept")
        assert (after.json(), after.index) == (before.json(), before.index)
    finally:
        consul.stop()


# --------------------------------------------------------------------------------------------------
# Blocking queries


def test_a_blocking_get_returns_when_the_key_changes(consul: DevConsulThread, pool: ThreadPoolExecutor) -> None:
    kv(consul, "PUT", "watched", b"v1")
    index = kv(consul, "GET", "watched").index
    pending: Future[Reply] = pool.submit(kv, consul, "GET", f"watched?index={index}&wait=10s")
    time.sleep(0.1)
    started = time.monotonic()

    kv(consul, "PUT", "watched", b"v2")

    answer = pending.result(timeout=5)
    assert time.monotonic() - started < 2
    assert (value_of(answer), answer.index > index) == (b"v2", True)


def test_a_blocking_get_is_not_woken_by_other_keys(consul: DevConsulThread, pool: ThreadPoolExecutor) -> None:
    kv(consul, "PUT", "watched", b"v1")
    index = kv(consul, "GET", "watched").index
    started = time.monotonic()
    pending: Future[Reply] = pool.submit(kv, consul, "GET", f"watched?index={index}&wait=1s")
    time.sleep(0.1)

    kv(consul, "PUT", "other", b"x")

    answer = pending.result(timeout=5)
    assert time.monotonic() - started >= 0.95
    assert answer.index == index


def test_a_blocking_get_of_a_missing_key_wakes_when_it_is_created(
    consul: DevConsulThread, pool: ThreadPoolExecutor
) -> None:
    missing = kv(consul, "GET", "later")
    pending: Future[Reply] = pool.submit(kv, consul, "GET", f"later?index={missing.index}&wait=10s")
    time.sleep(0.1)

    kv(consul, "PUT", "later", b"here")

    answer = pending.result(timeout=5)
    assert (answer.status, value_of(answer)) == (200, b"here")


def test_a_blocking_list_wakes_for_its_prefix_only(consul: DevConsulThread, pool: ThreadPoolExecutor) -> None:
    kv(consul, "PUT", "svc/a", b"1")
    index = kv(consul, "GET", "svc/?recurse").index
    started = time.monotonic()
    held: Future[Reply] = pool.submit(kv, consul, "GET", f"svc/?recurse&index={index}&wait=1s")
    time.sleep(0.1)
    kv(consul, "PUT", "elsewhere", b"x")
    assert held.result(timeout=5).index == index
    assert time.monotonic() - started >= 0.95

    woken: Future[Reply] = pool.submit(kv, consul, "GET", f"svc/?keys&index={index}&wait=10s")
    time.sleep(0.1)
    kv(consul, "DELETE", "svc/a")
    answer = woken.result(timeout=5)
    assert (answer.status, answer.index > index) == (404, True)  # gone, and the tombstone's index


# --------------------------------------------------------------------------------------------------
# ACLs


def _acl_consul(*tokens: AclToken) -> DevConsulThread:
    return DevConsulThread(acl=AclConfig("deny", (AclToken.manager(ROOT), *tokens)))


def test_key_rules_guard_reads_with_403_and_filter_lists() -> None:
    reader = AclToken("reader", "reader-secret", parse_rules("key_prefix:app/:read,key:app/secret:deny"))
    with _acl_consul(reader) as consul:
        for key in ("app/a", "app/secret", "other"):
            kv(consul, "PUT", key, b"x", token=ROOT)

        assert kv(consul, "GET", "app/a", token="reader-secret").status == 200
        denied = kv(consul, "GET", "other", token="reader-secret")
        assert denied.status == 403
        assert denied.text == (
            f"Permission denied: token with AccessorID '{reader.accessor_id}' lacks permission 'key:read' on \"other\""
        )
        assert kv(consul, "GET", "app/missing", token="reader-secret").status == 404  # may read: not found
        assert kv(consul, "GET", "elsewhere", token="reader-secret").status == 403  # may not: 403 either way
        assert kv(consul, "GET", "app/secret", token="reader-secret").status == 403  # the exact rule wins

        listed = kv(consul, "GET", "?recurse", token="reader-secret")
        assert ([entry["Key"] for entry in listed.json()], listed.filtered) == (["app/a"], True)
        keys = kv(consul, "GET", "?keys", token="reader-secret")
        assert (keys.json(), keys.filtered) == (["app/a"], True)
        assert kv(consul, "GET", "?keys", token=ROOT).filtered is False
        assert kv(consul, "GET", "other/?recurse", token="reader-secret").status == 404

        anonymous = kv(consul, "GET", "app/a")
        assert anonymous.status == 403
        assert anonymous.text.startswith("Permission denied: anonymous token lacks permission 'key:read'")
        assert kv(consul, "GET", "?recurse").status == 404  # filtered to nothing; no header without a token
        assert kv(consul, "GET", "app/a", token="no-such-token").text == "ACL not found"


def test_key_rules_guard_writes_and_a_recursive_delete_needs_the_whole_prefix() -> None:
    writer = AclToken("writer", "writer-secret", parse_rules("key_prefix:app/:write,key:app/locked:read"))
    with _acl_consul(writer) as consul:
        kv(consul, "PUT", "app/locked", b"x", token=ROOT)
        assert kv(consul, "PUT", "app/a", b"x", token="writer-secret").json() is True
        assert kv(consul, "PUT", "app/sub/b", b"x", token="writer-secret").json() is True
        refused = kv(consul, "PUT", "app/locked", b"y", token="writer-secret")
        assert refused.status == 403
        assert refused.text.endswith("lacks permission 'key:write' on \"app/locked\"")
        assert kv(consul, "PUT", "top", b"y", token="writer-secret").status == 403
        assert kv(consul, "DELETE", "app/a?cas=0", token="writer-secret").status == 200

        tree = kv(consul, "DELETE", "app/?recurse", token="writer-secret")  # app/locked is only readable
        assert tree.status == 403
        assert tree.text.endswith("lacks permission 'key:write' on \"app/\"")
        assert kv(consul, "DELETE", "app/sub/?recurse", token="writer-secret").json() is True
        assert kv(consul, "DELETE", "?recurse", token="writer-secret").status == 403  # no rule covers ""
        assert kv(consul, "GET", "?keys", token=ROOT).json() == ["app/a", "app/locked"]
        assert kv(consul, "DELETE", "?recurse", token=ROOT).json() is True


@pytest.fixture
def consul(consul_defaults: DevConsulThread) -> DevConsulThread:
    """devconsul with Consul's defaults (tests/integration/conftest.py)."""
    return consul_defaults
