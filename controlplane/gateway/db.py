"""Running synchronous ORM code from the gateway's event loop.

All calls share asgiref's single sync thread (``thread_sensitive``), so the gateway holds one
database connection per process, opened on first use and kept. A connection that broke (the
database restarted) is closed and the call retried once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connection

T = TypeVar("T")


def _call(fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
    try:
        return fn(**kwargs)
    except (InterfaceError, OperationalError):
        if connection.in_atomic_block:
            raise
        connection.close()
        return fn(**kwargs)


async def run_db(fn: Callable[..., T], /, **kwargs: Any) -> T:
    return await sync_to_async(_call, thread_sensitive=True)(fn, kwargs)
