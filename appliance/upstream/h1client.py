"""The upstream HTTP/1.1 client: asyncio protocols, llhttp (``httptools``) parsing, keep-alive pool.

Why not aiohttp here: the benchmark (bench/proxy.py) showed aiohttp's client spending about two
thirds of a worker's Python time per proxied request (request/response objects, header
multidicts, cookie and trace machinery the proxy never uses). This client writes the request
head as one bytes join, hands header bytes through untouched, and streams bodies with read and
write flow control, so memory stays flat for any body size. WebSockets still use aiohttp.
"""
from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httptools

from appliance.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from appliance.upstream.transport import Timeouts
from appliance.types import Headers

_HIGH_WATER = 256 * 1024  # buffered response bytes before reading from the upstream pauses
_LOW_WATER = 64 * 1024
_MAX_IDLE_PER_ORIGIN = 256
SWEEP_INTERVAL = 0.1  # seconds; the precision of read and total timeouts

Origin = tuple[str, int, Any]  # host, port, TLS setting


class _Connection(asyncio.Protocol):
    """One upstream connection carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, active: set[_Connection]) -> None:
        self.loop = loop
        self.active = active
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.head: asyncio.Future[None] = self.loop.create_future()
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.done = False
        self.keep_alive = False
        self.error: Exception | None = None
        self.got_bytes = False
        self.head_only = False
        self._interim = False
        self._waiter: asyncio.Future[None] | None = None
        self._read_paused = False
        self._last = 0.0
        self._read_timeout = 0.0
        self._deadline = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self._last = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"invalid HTTP from upstream: {exc}"))
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("upstream switched protocols on a plain request"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head.done() and not self.done and self._close_delimited():
            self._finish(keep_alive=False)
        elif not self.done:
            self._fail(UpstreamProtocolError("upstream closed the connection"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- llhttp callbacks ------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self._interim = True  # 100 Continue and friends: wait for the real response
            self.headers = []
            return
        self.status = status
        if not self.head.done():
            self.head.set_result(None)
        if self.head_only:
            self._finish(keep_alive=False)  # llhttp cannot know a HEAD response has no body

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self.done:
            self._finish(keep_alive=self.parser.should_keep_alive())

    # -- state changes ---------------------------------------------------------------------
    def _close_delimited(self) -> bool:
        return not any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in self.headers)

    def _finish(self, keep_alive: bool) -> None:
        self.done = True
        self.keep_alive = keep_alive
        self._stop_timer()
        self._wake()

    def _fail(self, error: Exception) -> None:
        if self.done:
            return
        self.error = error
        self.done = True
        self.keep_alive = False
        self._stop_timer()
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved here; the caller re-raises from self.error
        self._wake()
        self.abort()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- timeouts: checked by the transport's sweeper, so a request arms no timer of its own --
    def start_timer(self, read: float, deadline: float) -> None:
        self._read_timeout = read
        self._deadline = deadline
        self._last = self.loop.time()
        self.active.add(self)

    def check_timeouts(self, now: float) -> None:
        if now >= self._deadline:
            self._fail(UpstreamTimeout("upstream total timeout"))
        elif now - self._last >= self._read_timeout and not self._read_paused:
            self._fail(UpstreamTimeout("upstream read timeout"))

    def _stop_timer(self) -> None:
        self.active.discard(self)

    # -- used by the transport -------------------------------------------------------------
    async def drain(self, timeout: float) -> None:
        if self._write_paused and not self.closed:
            self._drain = self.loop.create_future()
            try:
                await asyncio.wait_for(self._drain, timeout)
            except asyncio.TimeoutError as exc:
                self.abort()
                raise UpstreamTimeout("upstream stopped reading the request body") from exc
        if self.closed and not self.head.done():
            raise UpstreamProtocolError("upstream closed the connection while receiving the body")

    async def next_chunk(self) -> bytes | None:
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.done:
                return None
            self._waiter = self.loop.create_future()
            await self._waiter
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self._read_paused and self.buffered < _LOW_WATER and self.transport is not None:
            self._read_paused = False
            self._last = self.loop.time()
            self.transport.resume_reading()
        return chunk


class H1Response:
    __slots__ = ("status", "headers", "_conn", "_pool")

    def __init__(self, conn: _Connection, pool: H1Transport) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._conn = conn
        self._pool = pool

    async def body(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            chunk = await conn.next_chunk()
            if chunk is None:
                return
            yield chunk

    def complete_body(self) -> bytes | None:
        """The whole body if it already arrived with the head (small responses): one send, not three."""
        conn = self._conn
        if not conn.done or conn.error is not None:
            return None
        body = b"".join(conn.chunks)
        conn.chunks.clear()
        conn.buffered = 0
        return body

    def close(self) -> None:
        self._pool.release(self._conn)


class H1Transport:
    """Keep-alive pool per (host, port, TLS setting); a worker has one."""

    def __init__(self, keepalive: float = 30.0) -> None:
        self.keepalive = keepalive
        self._idle: dict[Origin, list[_Connection]] = {}
        self._origin_of: dict[int, Origin] = {}
        self._default_tls: ssl.SSLContext | None = None
        self._insecure_tls: ssl.SSLContext | None = None
        self._active: set[_Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def _sweep(self) -> None:
        """Enforces read and total timeouts for every request in flight, 10 times a second."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = loop.time()
            for conn in list(self._active):
                conn.check_timeouts(now)

    def _tls(self, scheme: str, tls: ssl.SSLContext | bool | None) -> ssl.SSLContext | None:
        if scheme != "https":
            return None
        if isinstance(tls, ssl.SSLContext):
            return tls
        if tls is False:
            if self._insecure_tls is None:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                self._insecure_tls = ctx
            return self._insecure_tls
        if self._default_tls is None:
            self._default_tls = ssl.create_default_context()
        return self._default_tls

    async def _connect(self, origin: Origin, timeouts: Timeouts) -> _Connection:
        host, port, tls = origin
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop, self._active), host, port, ssl=tls,
                                       server_hostname=host if tls else None),
                timeouts.connect,
            )
        except asyncio.TimeoutError as exc:
            raise UpstreamTimeout("upstream connect timeout") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(f"cannot connect to upstream: {exc}") from exc
        self._origin_of[id(conn)] = origin
        return conn

    def _reuse(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive:
                conn._reset()
                return conn
            conn.abort()
            self._origin_of.pop(id(conn), None)
        return None

    def release(self, conn: _Connection) -> None:
        origin = self._origin_of.get(id(conn))
        if conn.done and conn.keep_alive and not conn.closed and not conn.chunks and origin is not None:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < _MAX_IDLE_PER_ORIGIN:
                conn.idle_since = conn.loop.time()
                idle.append(conn)
                return
        conn.abort()
        self._origin_of.pop(id(conn), None)

    async def send(
        self,
        scheme: str,
        host: str,
        port: int,
        method: str,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterator[bytes] | None,
        content_length: int | None,
        timeouts: Timeouts,
        tls: ssl.SSLContext | bool | None,
    ) -> H1Response:
        """Send one request; a reused connection that turns out dead is replaced once when the
        request can be replayed (no streamed body)."""
        origin: Origin = (host, port, self._tls(scheme, tls))
        head = [method.encode(), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        if isinstance(body, bytes):
            head.append(b"content-length: %d\r\n\r\n" % len(body))
        elif body is None:
            head.append(b"\r\n")
        elif content_length is not None:
            head.append(b"content-length: %d\r\n\r\n" % content_length)
        else:
            head.append(b"transfer-encoding: chunked\r\n\r\n")
        request_head = b"".join(head)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        deadline = asyncio.get_running_loop().time() + timeouts.total
        for attempt in (0, 1):
            conn = self._reuse(origin) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin, timeouts)
            conn.head_only = method == "HEAD"
            try:
                await self._write(conn, request_head, body, content_length, timeouts)
                conn.start_timer(timeouts.read, deadline)
                await conn.head
            except UpstreamProtocolError:
                conn.abort()
                if reused and not conn.got_bytes and not isinstance(body, AsyncIterator):
                    continue  # the keep-alive race: the upstream closed an idle connection
                raise
            except BaseException:
                conn.abort()
                raise
            return H1Response(conn, self)
        raise AssertionError("unreachable")

    async def _write(
        self, conn: _Connection, head: bytes, body: bytes | AsyncIterator[bytes] | None,
        content_length: int | None, timeouts: Timeouts,
    ) -> None:
        transport = conn.transport
        assert transport is not None
        if conn.closed:
            raise UpstreamProtocolError("upstream closed the connection")
        if body is None:
            transport.write(head)
        elif isinstance(body, bytes):
            transport.write(head + body if len(body) < 16384 else head)
            if len(body) >= 16384:
                transport.write(body)
        else:
            transport.write(head)
            chunked = content_length is None
            async for chunk in body:
                if conn.closed:
                    break  # the upstream answered early or went away; the response tells which
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                await conn.drain(timeouts.read)
            if chunked and not conn.closed:
                transport.write(b"0\r\n\r\n")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
        self._origin_of.clear()
