"""The local Docker daemon as a remote host: its unix socket forwarded on a TCP port of 127.0.0.1.

    with docker_over_tcp() as url:   # "tcp://127.0.0.1:<port>"
        TargetFactory(kind="docker", docker_url=url)   # with HANGAR_DOCKER_ALLOW_PLAIN_TCP on

The daemon is the real one and the bytes are its own, copied both ways; only the transport
differs, so the worker takes the path it takes for any ``tcp://`` host (a fetch container on the
daemon, a volume per model) instead of reading its own filesystem.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

SOCKET = "/var/run/docker.sock"


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _serve(client: socket.socket) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(SOCKET)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


@contextlib.contextmanager
def docker_over_tcp() -> Iterator[str]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve, args=(client,), daemon=True).start()

    thread = threading.Thread(target=accept, name="docker-over-tcp", daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)
