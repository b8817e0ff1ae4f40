"""Backend drivers and the one function that picks the driver for a target."""

from __future__ import annotations

from django.conf import settings

from controlplane.core.instance import instance_name
from controlplane.deployments.choices import TargetKind
from controlplane.deployments.models import Target
from workers.drivers.base import Driver, PermanentDriverError

__all__ = ["driver_for", "instance_name", "local_driver"]


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
