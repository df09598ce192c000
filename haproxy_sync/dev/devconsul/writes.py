"""Agent writes: services, checks and maintenance, one catalog write each; and bulk writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Final

from haproxy_sync.dev.devconsul.base import ServerBase
from haproxy_sync.dev.devconsul.decode import ConsulHTTPError, _bad_request
from haproxy_sync.dev.devconsul.records import (
    CRITICAL,
    NODE_MAINT_CHECK_ID,
    SERVICE_MAINT_PREFIX,
    Check,
    CheckDefinition,
    CheckRegistration,
    Service,
    ServiceRegistration,
    _go_quote,
    _kv,
    _log,
)

_NODE_MAINT_REASON: Final = (
    "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
)
_SERVICE_MAINT_REASON: Final = (
    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
)


def unknown_check(check_id: str) -> ConsulHTTPError:
    """agent/acl.go vetCheckUpdateWithAuthorizer's answer for a check the agent does not have."""
    return ConsulHTTPError(
        404, f"Unknown check ID {_go_quote(check_id)}. Ensure that the check ID is passed, not the check name."
    )


class AgentWrites(ServerBase):
    """What the agent endpoints write, and the bulk writes; methods tests and `DevConsulThread.call` use directly."""

    def _local_service(self, service_id: str) -> Service:
        service = self._catalog.services.get(service_id)
        if service is None or not service.local:
            raise ConsulHTTPError(
                404,
                f"Unknown service ID {_go_quote(service_id)}. "
                "Ensure that the service ID is passed, not the service name.",
            )
        return service

    def _agent_check(self, check_id: str) -> Check | None:
        """A check of the agent's local state: on its node, not serfHealth (the servers keep that one), not
        one registered through /v1/catalog/register (the catalog has it, the agent does not)."""
        check = self._catalog.checks.get(check_id)
        if check is None or check.definition.kind in ("serf", "catalog") or check.service_id == "consul":
            return None
        return check

    def register_service(self, registration: ServiceRegistration, *, replace_existing_checks: bool) -> None:
        """Add or replace a service; checks it already had keep their state (as Consul's snapshot)."""
        service = registration.service
        previous = self._catalog.services.get(service.service_id)
        if previous is not None and not previous.local:
            raise _bad_request(f"Invalid service ID {_go_quote(service.service_id)}: reserved")
        existing = {check.check_id: check for check in self._catalog.checks_of(service.service_id)}
        checks = [self._new_check(reg, service, self._catalog.checks.get(reg.check_id)) for reg in registration.checks]
        given = {check.check_id for check in checks}
        dropped = [
            cid
            for cid in existing
            if cid not in given and replace_existing_checks and not cid.startswith(SERVICE_MAINT_PREFIX)
        ]
        kept = [
            replace(check, service_name=service.name, service_tags=service.tags)
            for cid, check in existing.items()
            if cid not in given and cid not in dropped
        ]
        self._catalog.write(services=[service], checks=checks + kept, drop_checks=dropped)
        _log.info(
            "devconsul: registered service %s",
            _kv(
                id=service.service_id,
                name=service.name,
                address=service.address,
                port=service.port,
                tags=",".join(service.tags),
                checks=len(checks),
            ),
        )

    def _new_check(self, reg: CheckRegistration, service: Service | None, previous: Check | None) -> Check:
        status = previous.status if previous is not None else (reg.status or CRITICAL)
        return Check(
            check_id=reg.check_id,
            name=reg.name,
            status=status,
            notes=reg.notes,
            output=previous.output if previous is not None else "",
            service_id=service.service_id if service else "",
            service_name=service.name if service else "",
            service_tags=service.tags if service else (),
            definition=reg.definition,
        )

    def deregister_service(self, service_id: str) -> None:
        self._local_service(service_id)
        self._catalog.write(drop_services=[service_id])
        _log.info("devconsul: deregistered service %s", _kv(id=service_id))

    def _service_of_check(self, registration: CheckRegistration) -> Service | None:
        """The local service a check registration names (None for a node check); a missing one is an error."""
        if not registration.service_id:
            return None
        service = self._catalog.services.get(registration.service_id)
        if service is None or not service.local:
            raise ConsulHTTPError(500, f"ServiceID {_go_quote(registration.service_id)} does not exist")
        return service

    def register_check(self, registration: CheckRegistration) -> None:
        service = self._service_of_check(registration)
        registration = replace(registration, check_id=registration.check_id or registration.name)
        check = self._new_check(registration, service, self._catalog.checks.get(registration.check_id))
        self._catalog.write(checks=[check])
        _log.info(
            "devconsul: registered check %s",
            _kv(id=check.check_id, service=check.service_id, type=check.definition.kind),
        )

    def deregister_check(self, check_id: str) -> None:
        if self._agent_check(check_id) is None:
            raise unknown_check(check_id)
        self._catalog.write(drop_checks=[check_id])
        _log.info("devconsul: deregistered check %s", _kv(id=check_id))

    def set_service_maintenance(self, service_id: str, enable: bool, reason: str) -> None:
        service = self._local_service(service_id)
        check_id = SERVICE_MAINT_PREFIX + service_id
        if not enable:
            changed = self._catalog.write(drop_checks=[check_id])
        elif check_id in self._catalog.checks:
            changed = False  # idempotent, as Consul: the first reason stays
        else:
            changed = self._catalog.write(
                checks=[
                    Check(
                        check_id,
                        "Service Maintenance Mode",
                        CRITICAL,
                        notes=reason or _SERVICE_MAINT_REASON,
                        service_id=service_id,
                        service_name=service.name,
                        service_tags=service.tags,
                        definition=CheckDefinition("maintenance"),
                    )
                ]
            )
        if changed:
            _log.info("devconsul: service maintenance %s", _kv(id=service_id, enable=enable, reason=reason))

    def set_node_maintenance(self, enable: bool, reason: str) -> None:
        if not enable:
            changed = self._catalog.write(drop_checks=[NODE_MAINT_CHECK_ID])
        elif NODE_MAINT_CHECK_ID in self._catalog.checks:
            changed = False
        else:
            changed = self._catalog.write(
                checks=[
                    Check(
                        NODE_MAINT_CHECK_ID,
                        "Node Maintenance Mode",
                        CRITICAL,
                        notes=reason or _NODE_MAINT_REASON,
                        definition=CheckDefinition("maintenance"),
                    )
                ]
            )
        if changed:
            _log.info("devconsul: node maintenance %s", _kv(enable=enable, reason=reason))

    # ---- bulk writes (benchmarks) ----------------------------------------------------------------
    # Each agent write above is one catalog write, and every catalog write reconciles the check runners
    # over the whole catalog and wakes every blocking query. That is right for a handful of changes,
    # but populating 30,000 instances one call at a time costs O(N^2), and a benchmark's burst of
    # 10,000 changes would measure devconsul instead of its clients. These two take many records and
    # make them one write (one index), as a batch of agent syncs lands in one raft entry.

    def register_services(self, registrations: Sequence[ServiceRegistration]) -> int:
        """Register many services in one catalog write; each one as ``register_service`` would.

        Checks a service already had keep their state (``replace_existing_checks`` off). All or
        nothing: a reserved ID fails the whole call before anything changes. A service ID given twice
        keeps the last. Returns how many registrations were given.
        """
        latest = {registration.service.service_id: registration for registration in registrations}
        for service_id in latest:
            previous = self._catalog.services.get(service_id)
            if previous is not None and not previous.local:
                raise _bad_request(f"Invalid service ID {_go_quote(service_id)}: reserved")
        services: list[Service] = []
        checks: list[Check] = []
        for registration in latest.values():
            service = registration.service
            given = {reg.check_id for reg in registration.checks}
            checks.extend(
                self._new_check(reg, service, self._catalog.checks.get(reg.check_id)) for reg in registration.checks
            )
            checks.extend(
                replace(check, service_name=service.name, service_tags=service.tags)
                for check in self._catalog.checks_of(service.service_id)
                if check.check_id not in given
            )
            services.append(service)
        self._catalog.write(services=services, checks=checks)
        _log.info("devconsul: registered services in bulk %s", _kv(count=len(services), index=self._catalog.index))
        return len(latest)

    def deregister_services(self, service_ids: Sequence[str]) -> int:
        """Deregister many local services in one catalog write, as a node that leaves takes all of its
        services at once. All or nothing: an unknown ID fails before anything changes."""
        unique = list(dict.fromkeys(service_ids))
        for service_id in unique:
            self._local_service(service_id)
        self._catalog.write(drop_services=unique)
        _log.info("devconsul: deregistered services in bulk %s", _kv(count=len(unique), index=self._catalog.index))
        return len(unique)

    def set_weights(self, weights: Mapping[str, tuple[int, int]]) -> int:
        """Change the ``Weights`` (passing, warning) of many local services in one catalog write.

        The same change as re-registering each service with new weights (checks untouched), minus
        the decoding. All or nothing: an unknown ID or an invalid weight fails before anything
        changes. Returns how many services changed (a weight already set changes nothing).
        """
        updated = []
        for service_id, (passing, warning) in weights.items():
            service = self._local_service(service_id)
            if passing <= 0:
                raise _bad_request("Invalid Weights: Passing must be greater than 0")
            if warning < 0:
                raise _bad_request("Invalid Weights: Warning must be greater or equal than 0")
            if service.weights != (passing, warning):
                updated.append(replace(service, weights=(passing, warning)))
        if updated:
            self._catalog.write(services=updated)
        _log.info("devconsul: weights set in bulk %s", _kv(changed=len(updated), index=self._catalog.index))
        return len(updated)

    async def set_weights_over_time(
        self, writes: Sequence[Mapping[str, tuple[int, int]]], interval: float
    ) -> list[tuple[float, int]]:
        """``set_weights`` for each of ``writes``, ``interval`` seconds apart, timed on this event loop.

        A burst sent as separate HTTP calls lands late when the server is busy answering the blocking
        queries the previous write woke; timed here, each write lands on schedule (give or take one
        turn of the loop) however many answers are queued. Every ID is checked before the first write.
        Returns (Unix time, index) after each write.
        """
        for weights in writes:
            for service_id in weights:
                self._local_service(service_id)
        loop = asyncio.get_running_loop()
        start = loop.time()
        landed: list[tuple[float, int]] = []
        for k, weights in enumerate(writes):
            delay = start + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.set_weights(weights)
            landed.append((time.time(), self._catalog.index))
        return landed
