"""Backend drivers and the one function that picks the driver for a target."""

from __future__ import annotations

import re

from django.conf import settings
from django.db import connection

from controlplane.deployments.choices import TargetKind
from controlplane.deployments.models import Target
from workers.drivers.base import Driver, PermanentDriverError


def instance_name() -> str:
    """Label value that keeps two installations (or the test suite and a dev setup) apart.

    ``HANGAR_INSTANCE`` when set, else the database name: resources of another database's
    deployments are never mistaken for this installation's orphans.
    """
    name = settings.HANGAR_INSTANCE or str(connection.settings_dict["NAME"]).rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:63] or "hangar"


def local_driver() -> Driver:
    from workers.drivers.local import LocalDriver

    return LocalDriver(
        state_dir=settings.DATA_DIR / "replicas",
        instance=instance_name(),
        runtime_module=settings.HANGAR_LOCAL_RUNTIME_MODULE,
    )


def driver_for(target: Target) -> Driver:
    """The driver of ``target``; connections are opened lazily, at the first backend call."""
    if target.kind == TargetKind.LOCAL:
        return local_driver()
    if target.kind == TargetKind.DOCKER:
        from workers.drivers.docker import DockerDriver

        return DockerDriver(url=target.docker_url, image=settings.HANGAR_RUNTIME_IMAGE, instance=instance_name())
    if target.kind == TargetKind.KUBERNETES:
        from workers.drivers.kubernetes import KubernetesDriver

        return KubernetesDriver.for_target(target, image=settings.HANGAR_RUNTIME_IMAGE, instance=instance_name())
    raise PermanentDriverError(f"Unknown target kind {target.kind!r}.")
