"""A TCP proxy whose answers flow at a set rate: a real server, as slow as a real network.

A test that must watch a transfer in progress (a download step on a page) cannot rely on the
machine being slow: on a quiet machine a local server moves hundreds of MiB in a second. Put
this proxy between the client and the server and set ``rate`` (bytes per second) when the
transfer to watch begins; requests flow unchanged, answers at most at ``rate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

CHUNK = 64 * 1024


class ThrottledProxy:
    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rate: float | None = None  # bytes per second from the server to the client; None: as fast as it goes
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pump(client_reader, server_writer, throttled=False),
            self._pump(server_reader, client_writer, throttled=True),
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, throttled: bool) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
                if throttled and self.rate:
                    await asyncio.sleep(len(data) / self.rate)  # pacing: the proxy's whole purpose
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def start(self) -> ThrottledProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the throttled proxy did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextlib.contextmanager
def throttled_proxy(target_url: str) -> Iterator[ThrottledProxy]:
    proxy = ThrottledProxy(target_url).start()
    try:
        yield proxy
    finally:
        proxy.stop()
