"""Event-driven nudges: reconcile a deployment as soon as one of its replicas dies.

The periodic resync heals everything eventually (every ``HANGAR_RESYNC_INTERVAL``); these
watchers only make it prompt. They run as daemon threads in the worker's main process:

* Docker: one thread per Docker target streams ``die`` events of containers labelled with this
  installation's ``hangar.instance`` and enqueues a reconcile of their deployment. It connects
  the way the driver does (``docker_connection``: the same URL policy, the target's uploaded
  credentials), re-reading the target at every reconnect.
* Kubernetes: one thread per target and namespace (the target's, and each grant's own) follows
  this installation's pods (``PodWatch``: list, then watch with bookmarks, resumed from the last
  resourceVersion, listed afresh after ``410 Gone``) and enqueues a reconcile of the deployment
  of every pod that changes. It connects with ``driver_for``, like the reconciler.
* Local: one thread checks the local replicas' processes every second.

A watcher that loses its daemon reconnects with backoff; nothing depends on it being up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections, connection

from controlplane.deployments.choices import TargetKind
from controlplane.deployments.models import Target
from workers.drivers import driver_for, instance_name, local_driver, target_credentials
from workers.drivers.base import LABEL_DEPLOYMENT, LABEL_INSTANCE
from workers.drivers.docker_connection import DockerConnection

logger = logging.getLogger(__name__)

LOCAL_EVERY_S = 1.0
DISCOVER_EVERY_S = 30.0
MAX_BACKOFF_S = 30.0

Nudge = Callable[[int], None]


def _docker_target(target_id: int, kind: str = TargetKind.DOCKER) -> Target | None:
    try:
        return Target.objects.filter(pk=target_id, kind=kind).first()
    finally:
        connection.close()  # this thread mostly waits on the backend: hold no database connection


def _docker_watch(target_id: int, instance: str, nudge: Nudge, stop: threading.Event) -> None:
    backoff = 1.0
    while not stop.is_set():
        daemon: DockerConnection | None = None
        client: Any = None
        try:
            target = _docker_target(target_id)
            if target is None:  # deleted, or no longer a Docker target
                return
            daemon = DockerConnection.checked(target.docker_url, target_credentials(target))
            client = daemon.open(timeout=None)
            events = client.events(
                decode=True,
                filters={"type": "container", "event": ["die", "oom"], "label": [f"{LABEL_INSTANCE}={instance}"]},
            )
            backoff = 1.0
            for event in events:
                labels = (event.get("Actor") or {}).get("Attributes") or {}
                if labels.get(LABEL_DEPLOYMENT, "").isdigit():
                    nudge(int(labels[LABEL_DEPLOYMENT]))
                if stop.is_set():
                    break
        except Exception as exc:  # daemon gone, unreachable or refused: the resync covers us meanwhile
            logger.debug("docker watcher for target %s: %s", target_id, exc)
        finally:
            if client is not None:
                client.close()
            if daemon is not None:
                daemon.close()
        stop.wait(backoff)
        backoff = min(MAX_BACKOFF_S, backoff * 2)


def _kube_watch(target_id: int, tenant_id: int | None, nudge: Nudge, stop: threading.Event) -> None:
    from workers.drivers.kubernetes import KubernetesDriver, PodWatch

    state = PodWatch()  # kept across reconnects: a new connection resumes where the last one stopped
    backoff = 1.0
    while not stop.is_set():
        try:
            target = _docker_target(target_id, TargetKind.KUBERNETES)
            if target is None:  # deleted, or no longer a Kubernetes target
                return
            driver = driver_for(target, tenant_id=tenant_id)
            connection.close()
            if isinstance(driver, KubernetesDriver):
                started = time.monotonic()
                try:
                    state.run(driver, nudge, stop)
                finally:
                    if time.monotonic() - started > MAX_BACKOFF_S:  # it worked for a while
                        backoff = 1.0
        except Exception as exc:  # unreachable, refused, misconfigured: the resync covers us meanwhile
            logger.debug("kubernetes watcher for target %s: %s", target_id, exc)
        stop.wait(backoff)
        backoff = min(MAX_BACKOFF_S, backoff * 2)


def _kube_namespaces() -> dict[tuple[int, str], int | None]:
    """(target, namespace) -> a tenant whose driver works there (None: the target's own namespace)."""
    found: dict[tuple[int, str], int | None] = {}
    for target in Target.objects.filter(kind=TargetKind.KUBERNETES).prefetch_related("grants"):
        found.setdefault((target.pk, target.kube_namespace or "default"), None)
        for grant in target.grants.all():
            if grant.namespace:
                found.setdefault((target.pk, grant.namespace), grant.tenant_id)
    return found


def _local_watch(nudge: Nudge, stop: threading.Event) -> None:
    driver = local_driver()
    alive: dict[str, bool] = {}
    while not stop.wait(LOCAL_EVERY_S):
        try:
            for replica in driver.list(None):
                was = alive.get(replica.backend_id)
                alive[replica.backend_id] = replica.alive
                if was and not replica.alive:
                    nudge(replica.deployment_id)
        except Exception as exc:
            logger.debug("local watcher: %s", exc)


def _supervise(nudge: Nudge, stop: threading.Event) -> None:
    instance = instance_name()
    watching: set[int] = set()
    watching_kube: set[tuple[int, str]] = set()
    threading.Thread(target=_local_watch, args=(nudge, stop), name="hangar-watch-local", daemon=True).start()
    while not stop.is_set():
        try:
            close_old_connections()
            ids = set(Target.objects.filter(kind=TargetKind.DOCKER).values_list("pk", flat=True))
            namespaces = _kube_namespaces()
            close_old_connections()
        except Exception as exc:
            logger.debug("watch supervisor: %s", exc)
            ids, namespaces = set(), {}
        for key in sorted(set(namespaces) - watching_kube):
            watching_kube.add(key)
            threading.Thread(
                target=_kube_watch,
                args=(key[0], namespaces[key], nudge, stop),
                name=f"hangar-watch-target-{key[0]}-{key[1]}",
                daemon=True,
            ).start()
        for target_id in sorted(ids - watching):
            watching.add(target_id)
            threading.Thread(
                target=_docker_watch,
                args=(target_id, instance, nudge, stop),
                name=f"hangar-watch-target-{target_id}",
                daemon=True,
            ).start()
        stop.wait(DISCOVER_EVERY_S)


def start(nudge: Nudge) -> threading.Event:
    """Start the watchers; set the returned event to stop them."""
    stop = threading.Event()
    threading.Thread(target=_supervise, args=(nudge, stop), name="hangar-watch", daemon=True).start()
    return stop


def debounce(nudge: Nudge, *, within_s: float = 1.0) -> Nudge:
    """Coalesce bursts (two replicas dying together) into one reconcile per deployment."""
    last: dict[int, float] = {}
    lock = threading.Lock()

    def wrapped(deployment_id: int) -> None:
        now = time.monotonic()
        with lock:
            if now - last.get(deployment_id, -within_s) < within_s:
                return
            last[deployment_id] = now
        nudge(deployment_id)

    return wrapped
