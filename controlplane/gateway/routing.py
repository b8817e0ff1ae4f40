"""Model name -> deployment -> ready replica.

The routing table (per tenant) is cached for about a second and served slightly stale while
one background refresh runs, so the database sees a couple of queries per tenant per second
per process, never one per request. While the database is unreachable the last table read
is served, however old (static stability: replicas outlive a database outage, and the
passive health below skips the ones that fail). Replicas are chosen by fewest in-flight requests (tracked
in this process); a replica whose connections keep failing is ejected for a short time.
"""

from __future__ import annotations

import asyncio
import logging
import time

from django.db import InterfaceError, OperationalError

from controlplane.deployments.choices import DesiredState, Phase
from controlplane.gateway.conf import GatewayConf
from controlplane.gateway.db import run_db
from controlplane.gateway.selectors import ReplicaTarget, Route, gateway_routes

logger = logging.getLogger(__name__)

NOT_SERVING = {Phase.STOPPED, Phase.FAILED, Phase.DELETING}


def wakeable(route: Route) -> bool:
    """Autoscaled to zero: the gateway may ask for a replica."""
    return route.desired_state == DesiredState.RUNNING and route.autoscale and route.replicas == 0


def holdable(route: Route) -> bool:
    """No ready replica yet, but the control plane is bringing one up: worth a bounded wait."""
    if route.desired_state != DesiredState.RUNNING or route.phase in NOT_SERVING:
        return wakeable(route)
    return route.replicas > 0 or wakeable(route)


def listable(route: Route) -> bool:
    return route.phase in Phase.serving() or wakeable(route)


class RouteTable:
    def __init__(self, conf: GatewayConf) -> None:
        self.fresh = conf.route_cache_seconds
        self.stale = max(conf.route_stale_seconds, conf.route_cache_seconds)
        self.tenants: dict[int, tuple[float, dict[str, Route]]] = {}
        self.loading: dict[int, asyncio.Task[dict[str, Route]]] = {}
        self.invalidated: dict[int, float] = {}  # tenant -> when its routes were announced changed

    def invalidate(self, tenant_id: int | None) -> None:
        """Routes changed (``route_events``): the next request reads them again; a read already
        under way may predate the change, so it does not count as fresh."""
        now = time.monotonic()
        tenants = list(self.tenants) if tenant_id is None else [tenant_id]
        for tenant in tenants:
            self.invalidated[tenant] = now
            entry = self.tenants.get(tenant)
            if entry is not None:
                self.tenants[tenant] = (-1e9, entry[1])  # kept for a database outage, never fresh

    async def get(self, tenant_id: int, *, max_age: float | None = None) -> dict[str, Route]:
        entry = self.tenants.get(tenant_id)
        if entry is not None:
            age = time.monotonic() - entry[0]
            if age < (self.fresh if max_age is None else max_age):
                return entry[1]
            if max_age is None and age < self.stale:
                self._refresh(tenant_id)  # background; this request uses the slightly stale table
                return entry[1]
        try:
            return await asyncio.shield(self._refresh(tenant_id))
        except (OperationalError, InterfaceError):
            if entry is None:
                raise
            return entry[1]  # the last good table; _load keeps it for the next attempt

    def _refresh(self, tenant_id: int) -> asyncio.Task[dict[str, Route]]:
        task = self.loading.get(tenant_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(tenant_id))
            self.loading[tenant_id] = task
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "never retrieved"
        return task

    async def _load(self, tenant_id: int) -> dict[str, Route]:
        started = time.monotonic()
        try:
            routes = await run_db(gateway_routes, tenant_id=tenant_id)
        finally:
            self.loading.pop(tenant_id, None)
        stamp = started if self.invalidated.get(tenant_id, -1e9) < started else -1e9  # read before a change
        self.tenants[tenant_id] = (stamp, routes)
        if len(self.tenants) > 10_000:
            cutoff = time.monotonic() - self.stale
            self.tenants = {k: v for k, v in self.tenants.items() if v[0] > cutoff}
            self.invalidated = {k: v for k, v in self.invalidated.items() if v > cutoff}
        return routes


class Balancer:
    """Least in-flight replica choice with passive health (ejection after repeated failures)."""

    def __init__(self, conf: GatewayConf) -> None:
        self.in_flight: dict[int, int] = {}
        self.failures: dict[int, int] = {}
        self.ejected_until: dict[int, float] = {}
        self.eject_after = conf.eject_after_failures
        self.eject_seconds = conf.eject_seconds
        self._rr = 0

    def pick(self, route: Route, exclude: set[int]) -> ReplicaTarget | None:
        candidates = [r for r in route.ready if r.pk not in exclude]
        if not candidates:
            return None
        if self.ejected_until:
            now = time.monotonic()
            healthy = [r for r in candidates if self.ejected_until.get(r.pk, 0.0) <= now]
            candidates = healthy or candidates  # all ejected: still try rather than refuse
        if len(candidates) == 1:
            return candidates[0]
        self._rr += 1
        n = len(candidates)
        best = None
        best_load = 1 << 62
        for i in range(n):  # rotate the start so ties spread evenly
            replica = candidates[(self._rr + i) % n]
            load = self.in_flight.get(replica.pk, 0)
            if load < best_load:
                best, best_load = replica, load
        return best

    def acquire(self, replica: ReplicaTarget) -> None:
        self.in_flight[replica.pk] = self.in_flight.get(replica.pk, 0) + 1

    def release(self, replica: ReplicaTarget) -> None:
        left = self.in_flight.get(replica.pk, 1) - 1
        if left > 0:
            self.in_flight[replica.pk] = left
        else:
            self.in_flight.pop(replica.pk, None)

    def succeeded(self, replica: ReplicaTarget) -> None:
        if replica.pk in self.failures:
            del self.failures[replica.pk]
            self.ejected_until.pop(replica.pk, None)

    def failed(self, replica: ReplicaTarget) -> None:
        count = self.failures.get(replica.pk, 0) + 1
        self.failures[replica.pk] = count
        if count >= self.eject_after:
            if self.ejected_until.get(replica.pk, 0.0) <= time.monotonic():
                logger.warning(
                    "ejecting replica %s for %.0f s after %d failures", replica.pk, self.eject_seconds, count
                )
            self.ejected_until[replica.pk] = time.monotonic() + self.eject_seconds
