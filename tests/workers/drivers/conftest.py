"""Fixtures of the driver tests that talk to the real Docker daemon."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.workers.docker_support import docker_or_fail, remove_test_containers, remove_test_volumes


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    """The local daemon, with this session's leftover containers and volumes removed before and after."""
    client = docker_or_fail()
    remove_test_containers(client)
    remove_test_volumes(client)
    yield client
    remove_test_containers(client)
    remove_test_volumes(client)
    client.close()
