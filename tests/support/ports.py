"""Local TCP ports for servers a test starts, or for addresses a test wants unreachable."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port that was free a moment ago: bind it at once, or use it as a closed port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
