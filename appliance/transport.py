"""The upstream client seam (as httpx's ``BaseTransport``): one call that sends a request and
returns a streaming response. Tests and benchmarks can swap the implementation.
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from .errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from .types import Headers


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float
    total: float


class UpstreamResponse(Protocol):
    status: int
    headers: Headers

    def body(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Transport(Protocol):
    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        timeouts: Timeouts,
        tls: ssl.SSLContext | bool | None,
    ) -> UpstreamResponse: ...

    async def websocket(
        self, url: str, headers: list[tuple[str, str]], protocols: list[str], timeouts: Timeouts,
        tls: ssl.SSLContext | bool | None,
    ) -> aiohttp.ClientWebSocketResponse: ...

    async def close(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = list(resp.raw_headers)

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except asyncio.TimeoutError as exc:
            raise UpstreamTimeout("upstream read timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"upstream broke the response: {exc}") from exc

    def close(self) -> None:
        self._resp.release() if self._resp.content.at_eof() else self._resp.close()


class AiohttpTransport:
    """Pooled keep-alive client; one per worker, shared by every config generation."""

    def __init__(self, pool_size: int = 0, keepalive: float = 30.0) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._pool_size = pool_size
        self._keepalive = keepalive
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, keepalive_timeout=self._keepalive, ttl_dns_cache=10
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _timeout(self, t: Timeouts) -> aiohttp.ClientTimeout:
        found = self._timeouts.get(t)
        if found is None:
            found = self._timeouts[t] = aiohttp.ClientTimeout(
                total=t.total, connect=t.connect, sock_read=t.read
            )
        return found

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        timeouts: Timeouts,
        tls: ssl.SSLContext | bool | None,
    ) -> UpstreamResponse:
        try:
            resp = await self._client().request(
                method,
                URL(url, encoded=True),
                headers=headers,
                data=body,
                timeout=self._timeout(timeouts),
                ssl=True if tls is None else tls,
                allow_redirects=False,
                compress=None,
            )
        except asyncio.TimeoutError as exc:
            raise UpstreamTimeout("upstream timed out") from exc
        except (aiohttp.ClientConnectorError, aiohttp.ClientSSLError) as exc:
            raise UpstreamConnectError(f"cannot connect to upstream: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"upstream failed: {exc}") from exc
        return _AiohttpResponse(resp)

    async def websocket(
        self, url: str, headers: list[tuple[str, str]], protocols: list[str], timeouts: Timeouts,
        tls: ssl.SSLContext | bool | None,
    ) -> aiohttp.ClientWebSocketResponse:
        try:
            return await self._client().ws_connect(
                URL(url, encoded=True),
                headers=headers,
                protocols=protocols,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeouts.connect),
                ssl=True if tls is None else tls,
                autoping=True,
                max_msg_size=0,
            )
        except asyncio.TimeoutError as exc:
            raise UpstreamTimeout("upstream websocket handshake timed out") from exc
        except aiohttp.WSServerHandshakeError as exc:
            raise UpstreamProtocolError(f"upstream refused the websocket: {exc.status}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"cannot connect to upstream websocket: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
