"""Local TCP ports for servers a test starts, or for addresses a test wants unreachable."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (all held at once while choosing)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port() -> int:
    """A port that was free a moment ago: bind it at once, or use it as a closed port."""
    return free_ports(1)[0]


@contextlib.contextmanager
def listening_socket(backlog: int = 1) -> Iterator[socket.socket]:
    """A socket bound to a free 127.0.0.1 port and listening (a port that is taken), closed after."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        yield sock
