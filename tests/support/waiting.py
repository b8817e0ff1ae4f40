"""Polling instead of sleeping: wait for a condition, fail with what was last seen.

The suite's only waits: every test that waits for something calls ``wait_for`` (or, inside a
coroutine, ``wait_for_async``) with a deadline, never ``time.sleep`` (see tests/test_support_rules.py).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _failure(message: str, timeout: float, last: Any) -> AssertionError:
    return AssertionError(f"{message} not met within {timeout} s (last value: {last!r})")


def wait_for(predicate: Callable[[], T], timeout: float, message: str, interval: float = 0.1) -> T:
    """Call ``predicate`` until it returns something truthy and return that; fail after ``timeout`` s
    with ``message`` and the last value seen. Exceptions of ``predicate`` propagate (fail fast)."""
    deadline = time.monotonic() + timeout
    last = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise _failure(message, timeout, last)
        time.sleep(interval)
        last = predicate()
    return last


# A deadline that ends in a message, like wait_for's, not a cancellation: hence ``timeout``.
async def wait_for_async(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float,  # noqa: ASYNC109
    message: str,
    interval: float = 0.01,
) -> T:
    """``wait_for`` inside a coroutine: ``predicate`` may be sync or async; the loop keeps running."""

    async def call() -> T:
        value = predicate()
        return await value if inspect.isawaitable(value) else value  # type: ignore[return-value]

    deadline = time.monotonic() + timeout
    last = await call()
    while not last:
        if time.monotonic() > deadline:
            raise _failure(message, timeout, last)
        await asyncio.sleep(interval)
        last = await call()
    return last
