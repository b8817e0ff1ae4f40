"""Redis databases of this test worker: fixed roles, shifted by the worker's offset under
pytest-xdist (``console.settings.workers`` shifts ``REDIS_URL`` the same way)."""

from __future__ import annotations

import os

from django.conf import settings

OFFSET = int(os.environ.get("HANGAR_TEST_REDIS_OFFSET", "0"))


def redis_db(number: int) -> int:
    """Database ``number`` (0-15) of this worker's block of 16."""
    assert 0 <= number < 16, number
    return number + OFFSET


def redis_url(number: int) -> str:
    """``REDIS_URL``'s server with this worker's database ``number``."""
    return f"{settings.REDIS_URL.rsplit('/', 1)[0]}/{redis_db(number)}"
