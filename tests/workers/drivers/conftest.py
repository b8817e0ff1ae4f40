"""Fixtures of the driver tests that talk to the real Docker daemon."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.workers.docker_support import docker_or_fail, remove_test_containers


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    """The local daemon, with this session's leftover containers removed before and after."""
    client = docker_or_fail()
    remove_test_containers(client)
    yield client
    remove_test_containers(client)
    client.close()
