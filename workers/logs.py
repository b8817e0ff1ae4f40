"""Replica log tails for the REST API and the dashboard (tenant-scoped through the selector)."""

from __future__ import annotations

from controlplane.core.exceptions import DomainError
from controlplane.deployments.selectors import replica_get
from controlplane.tenancy.access import Access
from workers.drivers import driver_for
from workers.drivers.base import DriverError

MAX_TAIL = 5000


class LogsUnavailable(DomainError):
    """The backend holding the replica cannot be asked right now."""

    status = 503
    code = "backend_unavailable"


def replica_logs(*, access: Access, replica_id: int, tail: int = 200) -> str:
    """The last ``tail`` lines (1-5000) of a replica's output, for callers allowed to view it.

    Raises ``NotFound`` for replicas outside the caller's tenants and ``LogsUnavailable`` (503)
    when the backend does not answer.
    """
    replica = replica_get(access=access, pk=replica_id)
    tail = min(max(int(tail), 1), MAX_TAIL)
    if not replica.backend_id:
        return ""
    try:
        driver = driver_for(replica.deployment.target, tenant_id=replica.deployment.tenant_id)
    except DriverError as exc:
        raise LogsUnavailable(f"Could not read the logs: {exc.message}") from None
    try:
        return driver.logs(replica.backend_id, tail=tail)
    except DriverError as exc:
        raise LogsUnavailable(f"Could not read the logs: {exc.message}") from None
    finally:
        driver.close()
