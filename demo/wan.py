"""A WAN between a branch office and the data centre: a TCP proxy on loopback
that delays every chunk of bytes, each way, by the link's latency.

Delays are applied per chunk with its own delivery time, so a link stays
pipelined like a real one (latency, not a bandwidth cap). ``extra`` is read on
every chunk, which is how the ``wan_latency`` fault slows one site's link.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

_CHUNK = 65536


class WanLink:
    """Listens on 127.0.0.1 (an ephemeral port) and forwards to ``target``."""

    def __init__(self, site: str, target_port: int, latency: float, extra: Callable[[], float]) -> None:
        self.site = site
        self.target_port = target_port
        self.latency = latency  # seconds, one way
        self.extra = extra
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"wan-{site}", daemon=True)

    def delay(self) -> float:
        return self.latency + self.extra()

    def start(self) -> WanLink:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pipe(client_reader, server_writer),
            self._pipe(server_reader, client_writer),
            return_exceptions=True,
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await reader.read(_CHUNK)
                queue.put_nowait((loop.time() + self.delay(), chunk))
                if not chunk:
                    break
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
        finally:
            with contextlib.suppress(Exception):
                writer.close()
