"""The request path's channel to Redis: EVALSHA calls pipelined on one connection per worker.

redis-py's asyncio client spends about 120 us of CPU per command (pool checkout, argument
encoding, response machinery: measured with hiredis installed), which is as much as the rest of a
proxied request; this channel spends about a tenth of that. It does only what the CC decision
needs: connect (TCP, TLS or a Unix socket; AUTH and SELECT from the URL), write a command as
RESP, and match replies to callers in order. Replies are parsed by hiredis, Redis's own parser.
Everything else (bans, bad behaviour, script loading) goes through redis-py.

A reply slower than the timeout fails every call waiting on the connection, which is then
closed: with replies matched by order, a connection that lost one cannot be trusted again.
"""
from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis


class RespError(Exception):
    """Redis answered with an error (``NOSCRIPT ...``), or the connection failed or timed out."""


def pack(*args: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.channel._protocol is not self:  # a connection already given up on
            return
        self.reader.feed(data)
        waiting = self.channel.waiting
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not waiting:
                self.channel.drop(RespError("a reply nobody asked for"))
                return
            future, _ = waiting.popleft()
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(RespError(str(reply)))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.channel.drop(RespError(f"connection lost ({exc or 'closed by the server'})"))


class Channel:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            connect = loop.create_unix_connection(lambda: _Protocol(self), unquote(parts.path))
        else:
            context = ssl.create_default_context() if parts.scheme == "rediss" else None
            connect = loop.create_connection(lambda: _Protocol(self), parts.hostname or "127.0.0.1", parts.port or 6379,
                                             ssl=context)
        _, protocol = await asyncio.wait_for(connect, self.timeout)
        self._protocol = protocol
        setup = []
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else "default"
            setup.append(self.call(b"AUTH", user, unquote(parts.password)))
        database = parts.path.strip("/") if parts.scheme != "unix" else dict(
            p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("db", "")
        if database and database != "0":
            setup.append(self.call(b"SELECT", database))
        for step in setup:
            await step
        return protocol

    async def _ready(self) -> _Protocol:
        if self._protocol is not None and self._protocol.transport is not None:
            return self._protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        except (OSError, asyncio.TimeoutError, RespError) as exc:
            raise RespError(f"cannot connect: {type(exc).__name__} {exc}") from exc
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    def call(self, *args: bytes | str | int) -> asyncio.Future[Any]:
        """Send a command now; the future gets its reply (or a RespError)."""
        protocol = self._protocol
        assert protocol is not None and protocol.transport is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append((future, time.monotonic() + self.timeout))
        protocol.transport.write(pack(*args))
        if self._timer is None:
            self._timer = loop.call_later(self.timeout, self._check)
        return future

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        await self._ready()
        return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)

    def _check(self) -> None:
        """Runs while calls wait: one past its deadline fails them all and the connection."""
        self._timer = None
        if not self.waiting:
            return
        now = time.monotonic()
        if self.waiting[0][1] <= now:
            self.drop(RespError(f"no reply within {self.timeout * 1000:.0f} ms"))
            return
        self._timer = asyncio.get_running_loop().call_later(max(0.001, self.waiting[0][1] - now), self._check)

    def drop(self, error: RespError) -> None:
        protocol, self._protocol = self._protocol, None
        waiting, self.waiting = self.waiting, collections.deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
            protocol.transport = None

    def close(self) -> None:
        self.drop(RespError("closed"))
