"""A TCP fault proxy for PostgreSQL (or any TCP service), switchable at run time.

Point the collector's DSN at the proxy's port and flip its mode while a test
runs; every connection, old and new, follows the current mode:

``pass``
    bytes flow both ways untouched.
``latency``
    every chunk is passed on ``delay`` seconds after it arrived, in order, in
    both directions (a query round trip costs ``2 * delay`` more).
``blackhole``
    bytes are read and held, nothing is passed on, nothing is answered: a hung
    server, as the client sees it (the kernel still acknowledges every packet,
    so TCP timeouts and keepalives do not notice). New connections are
    accepted and hang too. Switching back to ``pass`` does **not** release the
    held bytes: a hung server's sessions do not come back to life; they are
    closed, as a real server's would be after a restart.
``reset``
    every connection is closed with a TCP RST (``SO_LINGER`` 0), new ones right
    after they are accepted: a crashed server or a broken network path.

It runs its own event loop in a thread, so synchronous tests use it as an
ordinary address::

    with FaultProxy(("127.0.0.1", pg_port)) as proxy:
        dsn = f"postgresql://...@127.0.0.1:{proxy.port}/db"
        ...
        proxy.set_mode("blackhole")
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

Mode = Literal["pass", "latency", "blackhole", "reset"]
MODES: tuple[Mode, ...] = ("pass", "latency", "blackhole", "reset")


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    poisoned: bool = False  # saw a black hole: never forwards again
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    def __init__(self, target: tuple[str, int], *, mode: Mode = "pass", delay: float = 0.1) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self._mode: Mode = mode
        self.delay = delay
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    # -- control (from any thread) -------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode, delay: float | None = None) -> None:
        """Switch every connection to ``mode`` now."""
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}: one of {', '.join(MODES)}")
        if delay is not None:
            self.delay = delay
        asyncio.run_coroutine_threadsafe(self._switch(mode), self._loop).result(10)

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for link in list(self._links):
                self._close(link, reset=False)
            # Connection handlers end by themselves once their sockets are
            # closed (cancelling them makes asyncio's stream server log errors).
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task() and task not in self._handlers:
                    task.cancel()
            await asyncio.sleep(0.2)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # -- inside the loop -----------------------------------------------------

    async def _switch(self, mode: Mode) -> None:
        self._mode = mode
        for link in list(self._links):
            if mode == "reset" or (mode != "blackhole" and link.poisoned):
                self._close(link, reset=mode == "reset")
            elif mode == "blackhole":
                link.poisoned = True

    def _close(self, link: _Link, *, reset: bool) -> None:
        self._links.discard(link)
        for writer in (link.client, link.upstream):
            if writer is None:
                continue
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
        for task in link.tasks:
            task.cancel()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        link = _Link(client_writer)
        self._links.add(link)
        if self._mode == "reset":
            self._close(link, reset=True)
            return
        if self._mode == "blackhole":
            link.poisoned = True
            await self._swallow(client_reader, link)
            return
        try:
            upstream_reader, link.upstream = await asyncio.open_connection(*self.target)
        except OSError:
            self._close(link, reset=True)
            return
        pumps = [
            asyncio.create_task(self._pump(client_reader, link.upstream, link)),
            asyncio.create_task(self._pump(upstream_reader, client_writer, link)),
        ]
        link.tasks.extend(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        self._close(link, reset=False)

    async def _swallow(self, reader: asyncio.StreamReader, link: _Link) -> None:
        """Read and drop until the client gives up: a black hole."""
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while await reader.read(65536):
                pass
        self._close(link, reset=False)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        """Pass ``reader``'s bytes to ``writer`` as the current mode says.

        Chunks queue with the time they arrived, so latency delays each one
        without cutting the bandwidth (a long COPY pays the delay once).
        """
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                arrived, chunk = await queue.get()
                if not chunk:
                    # The other side closed: pass the close on, whatever the
                    # mode, so abandoned sessions end on the server too.
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                if self._mode == "latency" and not link.poisoned:
                    await asyncio.sleep(max(0.0, arrived + self.delay - time.monotonic()))
                if link.poisoned or self._mode == "blackhole":
                    link.poisoned = True
                    continue  # held forever
                writer.write(chunk)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        link.tasks.append(delivering)
        try:
            while True:
                chunk = await reader.read(65536)
                queue.put_nowait((time.monotonic(), chunk))
                if not chunk:
                    break
            await delivering
        except (OSError, asyncio.IncompleteReadError):
            delivering.cancel()
