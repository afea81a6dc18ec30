"""The upstream client seam (as httpx's ``BaseTransport``): one call that sends a request and
returns a streaming response; ``h1client.H1Transport`` is the implementation. WebSockets go
through ``WebSocketConnector``.
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from appliance.errors import UpstreamConnectError, UpstreamRefused, UpstreamTimeout
from appliance.types import Headers


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float
    total: float


class UpstreamResponse(Protocol):
    status: int
    headers: Headers

    def body(self) -> AsyncIterator[bytes]: ...

    def complete_body(self) -> bytes | None: ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Sends one HTTP request upstream and returns the response with its body still streaming."""

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
    ) -> UpstreamResponse: ...

    async def close(self) -> None: ...


class WebSocketConnector:
    """Opens upstream WebSockets with aiohttp (rare and long-lived, so its per-call cost is fine)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def connect(
        self, url: str, headers: list[tuple[str, str]], protocols: list[str], timeouts: Timeouts,
        tls: ssl.SSLContext | bool | None,
    ) -> aiohttp.ClientWebSocketResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        try:
            return await self._session.ws_connect(
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
            raise UpstreamRefused(f"upstream refused the websocket: {exc.status}", exc.status) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"cannot connect to upstream websocket: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
