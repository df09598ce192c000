"""Handlers of /v1/acl/*: ``GET /v1/acl/token/self``, the one ACL endpoint clients use to check a token.

What Consul does (agent/acl_endpoint.go ``ACLTokenSelf``, agent/consul/acl_endpoint.go ``TokenRead``):
with ACLs disabled every ACL endpoint answers 401 "ACL support disabled"; otherwise the token is read
*by its secret*, with no permission needed ("if you have the secret ID you can read it"). A secret
that is no token is not found, and since Consul 1.11 a blocking query's not-found is no error
(blockingquery.ErrNotFound becomes nil), so the handler answers 404 "Supplied token does not exist",
not the 403 "ACL not found" of other endpoints. A request without a token looks up the secret ""
(parseToken leaves it empty when the agent has no default token): the anonymous token's secret is
"anonymous", so that is a 404 too, while ``?token=anonymous`` reads the anonymous token.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from haproxy_sync.dev.devconsul.acl import token_json
from haproxy_sync.dev.devconsul.decode import ConsulHTTPError
from haproxy_sync.dev.devconsul.http import _request_token
from haproxy_sync.dev.devconsul.pipeline import RequestPipeline

_TOKEN_INDEX: Final = 1  # devconsul's tokens exist from the start: the first raft index


class AclHandlers(RequestPipeline):
    """The ACL endpoints devconsul has: token/self."""

    async def _h_acl_token_self(self, request: web.Request) -> web.Response:
        if self._acl is None:
            raise ConsulHTTPError(401, "ACL support disabled")
        options = self._read_options(request)
        token = self._acl.token_by_secret(_request_token(request) or "")
        if token is None:
            raise ConsulHTTPError(404, "Supplied token does not exist")
        payload = token_json(token, created=self._acl_created, index=_TOKEN_INDEX)
        return self._read_response(options, _TOKEN_INDEX, payload, faulted=False)
