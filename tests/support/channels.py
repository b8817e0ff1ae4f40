"""What the channel layer delivered to a test's own channel."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def pushed(channel: str) -> list[dict[str, Any]]:
    """Every payload waiting on ``channel``, until it stays quiet for 0.5 s."""
    layer = get_channel_layer()

    async def drain() -> list[dict[str, Any]]:
        messages = []
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=0.5)
            except TimeoutError:
                return messages
            messages.append(message["payload"])

    return async_to_sync(drain)()
