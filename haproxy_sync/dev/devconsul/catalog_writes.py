"""Handlers of PUT /v1/catalog/register and /v1/catalog/deregister: external nodes, their services and checks.

What Consul does (agent/consul/catalog_endpoint.go): Register creates or updates a node, at most one
service and any checks on it in one raft entry, and answers ``true``; Deregister removes a service
(with its checks), a check, or the whole node with everything on it (ServiceID first, then CheckID,
else the node), and a missing one is no error. The ACLs are vetRegisterWithACL and
vetDeregisterWithACL: service:write on the service (and on one with the same ID it replaces),
node:write when the node is created or any of its fields change (so a service update may re-post the
node's data without node:write), node:write for node checks, service:write for a check of another
service on the node; a deregistration is allowed by node:write on the node, else needs service:write
on the service (or the check's service) it removes.

Where devconsul differs: the agent's own node is the agent's. A registration on it adds catalog-only
services and checks (not the agent's: /v1/agent/services does not list them) and leaves the node's
own fields as the agent has them, as its anti-entropy would restore them; what the agent owns (its
services and checks, the "consul" service, serfHealth, the node itself) cannot be replaced or removed
through these endpoints (400): Consul would let it and the agent's next sync would put it back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from aiohttp import web

from haproxy_sync.dev.devconsul.decode import ConsulHTTPError, _bad_request
from haproxy_sync.dev.devconsul.http import _json_body
from haproxy_sync.dev.devconsul.pipeline import RequestPipeline
from haproxy_sync.dev.devconsul.records import Check, Node, Service, _kv, _log
from haproxy_sync.dev.devconsul.registration import (
    CatalogDeregistration,
    CatalogRegistration,
    decode_catalog_deregistration,
    decode_catalog_registration,
)

_AGENT_OWNED: Final = "devconsul: {what} is the agent's own; change it through /v1/agent/ endpoints"


def _changes_node(registration: CatalogRegistration, existing: Node | None) -> bool:
    """RegisterRequest.ChangesNode: a new node, or (unless SkipNodeUpdate) any node field that differs."""
    if existing is None:
        return True
    if registration.skip_node_update:
        return False
    node = registration.node
    return (
        node.node_id != existing.node_id
        or node.name.lower() != existing.name.lower()
        or node.address != existing.address
        or node.datacenter != existing.datacenter
        or node.tagged_addresses != existing.tagged_addresses
        or node.meta != existing.meta
    )


class CatalogWrites(RequestPipeline):
    """catalog/register and catalog/deregister, vetted as Consul vets them."""

    def _is_agent_node(self, name: str) -> bool:
        return name.lower() == self._node.name.lower()

    def _agent_owns_service(self, service: Service | None) -> bool:
        return service is not None and (service.local or service.service_id == "consul")

    def _agent_owns_check(self, check: Check | None) -> bool:
        return check is not None and check.definition.kind != "catalog"

    # ---- register --------------------------------------------------------------------------------

    async def _h_catalog_register(self, request: web.Request) -> web.Response:
        raw = await _json_body(request)
        self._authorizer(request)  # the RPC resolves the token first: an unknown one is 403 "ACL not found"
        registration, check_nodes = decode_catalog_registration(raw, self._node.datacenter)
        self._vet_register(request, registration, check_nodes)
        self._refuse_agent_owned(registration)
        self._apply_register(registration)
        return web.json_response(True)

    def _vet_register(self, request: web.Request, registration: CatalogRegistration, check_nodes: list[str]) -> None:
        """servicePreApply then vetRegisterWithACL, in Consul's order (a permission error is 403)."""
        authorizer = self._authorizer(request)
        service = registration.service
        name = registration.node.name
        if service is not None and service.name != "consul":
            self._require(request, "service", "write", service.name)
        existing = self._catalog.node_named(name)
        if _changes_node(registration, existing):
            self._require(request, "node", "write", name)
        on_node = {s.service_id: s for s in self._catalog.services_on(name)} if existing is not None else {}
        if service is not None:
            self._require(request, "service", "write", service.name)
            replaced = on_node.get(service.service_id)
            if replaced is not None and not authorizer.service_write(replaced.name):
                raise ConsulHTTPError(403, "Permission denied")  # vetRegisterWithACL: acl.ErrPermissionDenied
        for check, check_node in zip(registration.checks, check_nodes, strict=True):
            if check_node.lower() != name.lower():
                raise ConsulHTTPError(
                    500,
                    f"Node '{check_node}' for check '{check.check_id}' doesn't match register request node '{name}'",
                )
            if not check.service_id:
                self._require(request, "node", "write", name)
                continue
            if service is not None and service.service_id == check.service_id:
                continue
            other = on_node.get(check.service_id)
            if other is None:
                raise ConsulHTTPError(
                    500, f"Unknown service ID '{check.service_id}' for check ID '{check.check_id}'"
                )
            self._require(request, "service", "write", other.name)

    def _refuse_agent_owned(self, registration: CatalogRegistration) -> None:
        if not self._is_agent_node(registration.node.name):
            return
        service = registration.service
        if service is not None and self._agent_owns_service(self._catalog.services.get(service.service_id)):
            raise _bad_request(_AGENT_OWNED.format(what=f"service {service.service_id!r}"))
        for check in registration.checks:
            if self._agent_owns_check(self._catalog.checks.get(check.check_id)):
                raise _bad_request(_AGENT_OWNED.format(what=f"check {check.check_id!r}"))

    def _apply_register(self, registration: CatalogRegistration) -> None:
        """ensureRegistrationTxn: the node (unless unchanged or skipped), the service, the checks."""
        name = registration.node.name
        existing = self._catalog.node_named(name)
        register_node: Node | None = registration.node
        if self._is_agent_node(name) or (existing is not None and registration.skip_node_update):
            register_node = None
        service = registration.service
        known = {s.service_id: s for s in self._catalog.services_on(name)}
        if service is not None:
            known[service.service_id] = service
        checks = []
        for check in registration.checks:
            owner = known.get(check.service_id) if check.service_id else None
            if check.service_id and owner is None:
                raise ConsulHTTPError(500, f'failed inserting check on node "{name}": Missing service registration')
            checks.append(
                replace(check, service_name=owner.name, service_tags=owner.tags) if owner is not None else check
            )
        self._catalog.write(
            node=existing.name if existing is not None else name,
            register_node=register_node,
            services=[service] if service is not None else [],
            checks=checks,
        )
        _log.info(
            "devconsul: catalog registered %s",
            _kv(node=name, service=service.service_id if service else "", checks=len(checks)),
        )

    # ---- deregister ------------------------------------------------------------------------------

    async def _h_catalog_deregister(self, request: web.Request) -> web.Response:
        raw = await _json_body(request)
        deregistration = decode_catalog_deregistration(raw, self._node.datacenter)
        self._authorizer(request)
        self._vet_deregister(request, deregistration)
        self._apply_deregister(deregistration)
        return web.json_response(True)

    def _vet_deregister(self, request: web.Request, deregistration: CatalogDeregistration) -> None:
        """vetDeregisterWithACL: node:write on the node allows all; else the service's or check's own."""
        authorizer = self._authorizer(request)
        node = deregistration.node
        if authorizer.node_write(node):
            return
        if deregistration.service_id:
            service = {s.service_id: s for s in self._catalog.services_on(node)}.get(deregistration.service_id)
            if service is None:
                raise ConsulHTTPError(500, f"Unknown service ID '{deregistration.service_id}'")
            self._require(request, "service", "write", service.name)
        elif deregistration.check_id:
            check = {c.check_id: c for c in self._catalog.checks_on(node)}.get(deregistration.check_id)
            if check is None:
                raise ConsulHTTPError(500, f"Unknown check ID '{deregistration.check_id}'")
            if check.service_id:
                self._require(request, "service", "write", check.service_name)
            else:
                self._require(request, "node", "write", node)
        else:
            self._require(request, "node", "write", node)

    def _apply_deregister(self, deregistration: CatalogDeregistration) -> None:
        """applyDeregister: ServiceID, else CheckID, else the whole node; what does not exist is no error."""
        node = self._catalog.node_named(deregistration.node)
        if node is None:
            return
        agent = self._is_agent_node(node.name)
        if deregistration.service_id:
            if agent and self._agent_owns_service(self._catalog.services.get(deregistration.service_id)):
                raise _bad_request(_AGENT_OWNED.format(what=f"service {deregistration.service_id!r}"))
            self._catalog.write(node=node.name, drop_services=[deregistration.service_id])
        elif deregistration.check_id:
            if agent and self._agent_owns_check(self._catalog.checks.get(deregistration.check_id)):
                raise _bad_request(_AGENT_OWNED.format(what=f"check {deregistration.check_id!r}"))
            self._catalog.write(node=node.name, drop_checks=[deregistration.check_id])
        else:
            if agent:
                raise _bad_request(_AGENT_OWNED.format(what=f"node {node.name!r}"))
            self._catalog.write(node=node.name, drop_node=True)
        _log.info(
            "devconsul: catalog deregistered %s",
            _kv(node=node.name, service=deregistration.service_id, check=deregistration.check_id),
        )
