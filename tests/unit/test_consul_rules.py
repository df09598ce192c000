from __future__ import annotations

import random

import aiohttp
import consul
import consul.exceptions
import pytest

from haproxy_sync.consul import ConsulError, backoff_delay, classify, next_index, parse_index


@pytest.mark.parametrize(("last", "returned", "expected"), [
    (0, 5, 5),      # first read
    (5, 9, 9),      # moved forward
    (9, 9, 9),      # wait ran out, nothing changed
    (9, 3, 0),      # went backwards: reset, fresh read
    (0, 0, 1),      # an index of 0 is never sent back as 0
    (7, 0, 0),      # backwards to 0: reset first ...
    (0, -4, 1),     # ... then below 1 becomes 1
])
def test_index_rules(last: int, returned: int, expected: int) -> None:
    assert next_index(last, returned) == expected


def test_bad_index_header_is_a_bad_answer() -> None:
    with pytest.raises(ConsulError) as err:
        parse_index("abc")
    assert err.value.kind == "bad_answer"


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 30.0, rng) for n in range(1, 15)]
    assert delays[0] <= 0.25
    assert all(d <= 30.0 for d in delays)
    assert max(delays[-4:]) >= 15.0


@pytest.mark.parametrize(("exc", "kind"), [
    (consul.ACLPermissionDenied("Permission denied"), "acl"),
    (consul.ConsulException("500 No cluster leader"), "no_leader"),
    (consul.ConsulException("Failed to decode JSON: " + "x" * 10000), "bad_answer"),
    (consul.exceptions.ClientError("429 rate limit exceeded"), "rate_limited"),
    (TimeoutError(), "timeout"),
    (aiohttp.ServerDisconnectedError(), "connection_reset"),
    (ValueError("not a list"), "bad_answer"),
])
def test_classification(exc: BaseException, kind: str) -> None:
    error = classify(exc, "cabify")
    assert error.kind == kind
    assert len(str(error)) < 300, "errors never carry a whole answer body into the logs"


def test_acl_error_names_the_permissions_needed() -> None:
    message = str(classify(consul.ACLPermissionDenied("Permission denied"), "cabify"))
    assert "service:read" in message and "node:read" in message and "cabify" in message
