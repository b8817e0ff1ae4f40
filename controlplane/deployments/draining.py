"""Graceful removal of replicas, the control plane's half: rows out of routing, and the word to
every gateway process.

A replica chosen for removal is first marked ``terminating`` (``draining_since``): the gateway
routes only to ``ready`` replicas, so it leaves every process's routing table at that process's
next refresh, and ``routes_announce`` makes each process refresh at once. Only once the
slowest table has expired (``route_drop_seconds``) is the replica asked to stop
(``stopping_since``): it finishes what it has in flight and refuses the rest with 503, which the
gateway passes to another replica. The reconciler's half is ``workers.draining``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db import transaction

from controlplane.deployments.choices import ReplicaState
from controlplane.deployments.models import Replica

logger = logging.getLogger(__name__)

ROUTES_CHANNEL = "hangar:routes:changed"
ROUTE_QUERY_MARGIN_S = 1.0  # a routing table is stamped when its query starts, and queries take time


def route_drop_seconds() -> float:
    """How long after a replica left the database's routing every gateway process has dropped it:
    a process serves a table at most ``HANGAR_GATEWAY_ROUTE_STALE_SECONDS`` old (announcements
    make it sooner; this bound holds when one is missed)."""
    stale = max(settings.HANGAR_GATEWAY_ROUTE_STALE_SECONDS, settings.HANGAR_GATEWAY_ROUTE_CACHE_SECONDS)
    return stale + ROUTE_QUERY_MARGIN_S


def replicas_drain_begin(*, deployment_id: int, tenant_id: int, names: Iterable[str], at: datetime) -> int:
    """Take replicas out of routing (state ``terminating``) and tell every gateway process."""
    marked = Replica.objects.filter(
        deployment_id=deployment_id, name__in=list(names), draining_since__isnull=True
    ).update(state=ReplicaState.TERMINATING, draining_since=at, updated_at=at)
    if marked:
        transaction.on_commit(lambda: routes_announce(tenant_id))
    return marked


def replica_stop_begin(*, replica_id: int, at: datetime) -> bool:
    """Record that the replica was asked to stop (so it is asked once: a second SIGTERM kills)."""
    return bool(Replica.objects.filter(pk=replica_id, stopping_since__isnull=True).update(stopping_since=at))


def routes_announce(tenant_id: int) -> None:
    """Tell every gateway process to reload the tenant's routes (best effort: their cache's
    staleness bound holds without it)."""
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        client.publish(ROUTES_CHANNEL, str(int(tenant_id)))
        client.close()
    except redis.RedisError:
        logger.warning("could not announce a routing change; gateways drop it within %.1f s", route_drop_seconds())
