"""Backend drivers and the one function that picks the driver for a target.

Connection settings are the platform's (``Target``), checked again by the drivers before any
network call; uploaded credentials are decrypted here and handed to the driver that needs them.
"""

from __future__ import annotations

from django.conf import settings

from controlplane.core.crypto import CredentialsUnreadable
from controlplane.core.instance import instance_name
from controlplane.deployments import selectors
from controlplane.deployments.choices import TargetKind
from controlplane.deployments.models import Target
from workers.drivers.base import Driver, PermanentDriverError
from workers.drivers.health import Reason
from workers.drivers.images import configured_images

__all__ = ["driver_for", "instance_name", "local_driver", "target_credentials"]


def local_driver() -> Driver:
    from workers.drivers.local import LocalDriver

    return LocalDriver(
        state_dir=settings.DATA_DIR / "replicas",
        instance=instance_name(),
        runtime_module=settings.HANGAR_LOCAL_RUNTIME_MODULE,
    )


def target_credentials(target: Target) -> dict[str, str]:
    """The target's uploaded credentials, decrypted (``PermanentDriverError`` if they cannot be)."""
    try:
        return selectors.target_credentials(target)
    except (CredentialsUnreadable, ValueError):
        raise PermanentDriverError(
            f"The credentials of target {target.name!r} cannot be decrypted with HANGAR_ENCRYPTION_KEYS.",
            reason="CredentialsUnreadable",
            cause=Reason.CREDENTIALS_UNREADABLE,
        ) from None


def driver_for(target: Target, *, tenant_id: int | None = None) -> Driver:
    """The driver of ``target`` (for ``tenant_id``'s replicas: on Kubernetes, its grant's namespace).

    Settings the worker refuses raise ``PermanentDriverError`` here, before any network call;
    connections are opened lazily, at the first backend call.
    """
    if target.kind == TargetKind.LOCAL:
        return local_driver()
    if target.kind == TargetKind.DOCKER:
        from workers.drivers.docker import DockerDriver

        return DockerDriver.for_target(
            target,
            image=settings.HANGAR_RUNTIME_IMAGE,
            cuda_image=configured_images().cuda,
            instance=instance_name(),
            credentials=target_credentials(target),
        )
    if target.kind == TargetKind.KUBERNETES:
        from workers.drivers.kubernetes import KubernetesDriver

        return KubernetesDriver.for_target(
            target,
            image=settings.HANGAR_RUNTIME_IMAGE,
            cuda_image=configured_images().cuda,
            instance=instance_name(),
            tenant_id=tenant_id,
        )
    raise PermanentDriverError(f"Unknown target kind {target.kind!r}.")
