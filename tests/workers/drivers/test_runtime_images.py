"""Replicas run the runtime image of their accelerator: CPU replicas ``HANGAR_RUNTIME_IMAGE``,
GPU replicas ``HANGAR_RUNTIME_IMAGE_CUDA``, on Docker and on Kubernetes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.workers.drivers.test_docker_driver import make
from tests.workers.drivers.test_kubernetes_driver import spec
from tests.workers.k8s_fake import FakeCluster
from workers.drivers import driver_for
from workers.drivers.docker import DockerDriver
from workers.drivers.images import Accelerator, RuntimeImages
from workers.drivers.kubernetes import KubernetesDriver

CPU, CUDA = "hangar-runtime:latest", "hangar-runtime-cuda:latest"


@pytest.mark.parametrize(("gpus", "image"), [(0, CPU), (1, CUDA)])
def test_docker_replicas_run_their_accelerators_image(gpus: int, image: str) -> None:
    driver, client, replica = make(gpus=gpus)
    driver.images = RuntimeImages(cpu=CPU, cuda=CUDA)
    driver.create(replica)
    assert client.containers.created[0]["image"] == image


@pytest.mark.parametrize(("gpus", "image"), [(0, CPU), (1, CUDA)])
def test_kubernetes_pods_run_their_accelerators_image(gpus: int, image: str) -> None:
    cluster = FakeCluster()
    driver = KubernetesDriver(
        apps=cluster.apps, core=cluster.core, namespace="serving", image=CPU, cuda_image=CUDA, instance="t"
    )
    driver.apply(spec(gpus=gpus), 1)
    [deployment] = cluster.deployments.values()
    [container] = deployment.spec.template.spec.containers
    assert container.image == image


def test_without_a_cuda_image_gpu_replicas_run_the_cpu_image() -> None:
    assert RuntimeImages(cpu=CPU).for_accelerator(Accelerator.CUDA) == CPU
    assert RuntimeImages(cpu=CPU, cuda=CUDA).for_accelerator(Accelerator.CPU) == CPU


@pytest.mark.django_db
def test_the_drivers_take_both_images_from_the_settings(settings: Any) -> None:
    from tests.factories import TargetFactory

    settings.HANGAR_RUNTIME_IMAGE = "cpu-image:1"
    settings.HANGAR_RUNTIME_IMAGE_CUDA = "cuda-image:1"
    target = TargetFactory(kind="docker", docker_url="unix:///var/run/docker.sock")
    driver = driver_for(target)
    assert isinstance(driver, DockerDriver)
    assert driver.images == RuntimeImages(cpu="cpu-image:1", cuda="cuda-image:1")
