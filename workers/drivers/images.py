"""Which runtime image a replica runs: one image per accelerator.

A CPU replica runs ``HANGAR_RUNTIME_IMAGE`` (``deploy/images/build runtime``: CPU torch, 1.7 GB);
a replica that asks for a GPU runs ``HANGAR_RUNTIME_IMAGE_CUDA`` (``deploy/images/build
runtime-cuda``: CUDA torch and its libraries, several GB). Both images carry the label
``io.hangar.runtime.accelerator`` (``cpu`` / ``cuda``), and both answer the same command line,
so the drivers (Docker, Kubernetes) only swap the image name. Image names are platform
settings, never tenant input.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

ACCELERATOR_LABEL = "io.hangar.runtime.accelerator"


class Accelerator(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


def accelerator_of(spec: Any) -> Accelerator:
    """The accelerator a replica needs: CUDA when it asks for a GPU (``ReplicaSpec.gpus``)."""
    return Accelerator.CUDA if getattr(spec, "gpus", 0) else Accelerator.CPU


@dataclass(frozen=True)
class RuntimeImages:
    """The image for each accelerator; without a CUDA image, GPU replicas run the CPU one."""

    cpu: str
    cuda: str = ""

    def for_accelerator(self, accelerator: Accelerator) -> str:
        if accelerator is Accelerator.CUDA and self.cuda:
            return self.cuda
        return self.cpu

    def for_replica(self, spec: Any) -> str:
        return self.for_accelerator(accelerator_of(spec))


def configured_images() -> RuntimeImages:
    """The images the settings name (``HANGAR_RUNTIME_IMAGE``, ``HANGAR_RUNTIME_IMAGE_CUDA``)."""
    from django.conf import settings

    return RuntimeImages(cpu=settings.HANGAR_RUNTIME_IMAGE, cuda=settings.HANGAR_RUNTIME_IMAGE_CUDA)
