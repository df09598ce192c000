"""Raw HTTP for the devconsul tests (test_devconsul*.py): one request, one :class:`Reply`.

Every request is one urllib call with a bounded timeout; an HTTP error status is an answer, not an
exception, so a test can assert Consul's status and text; only a transport failure raises.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

FILTERED = "x-consul-results-filtered-by-acls"


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, headers keyed in lower case."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def index(self) -> int:
        return int(self.headers["x-consul-index"])

    @property
    def filtered(self) -> bool:
        """Whether Consul's filtered-by-ACLs header is there (it is only ever "true")."""
        value = self.headers.get(FILTERED)
        assert value in (None, "true"), value
        return value == "true"


def call(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    context: ssl.SSLContext | None = None,
) -> Reply:
    """Send one request: bytes are sent as they are, anything else as JSON; PUT without a body sends b""."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["X-Consul-Token"] = token
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    if method == "PUT" and data is None:
        data = b""
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        try:
            return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())
        finally:
            error.close()
