"""The first stage: request id, client address, framing, Host, domain and route.

Everything later stages and the proxy need to know about where a request goes is decided here, in
one pass over the headers, so access lists and GeoIP slot in after it without touching the ASGI
entry point. Malformed requests are rejected with a 4xx verdict of kind ``reject``.
"""
from __future__ import annotations

import itertools
import os
from typing import ClassVar

from appliance.pipeline.clientip import ClientIPResolver
from appliance.pipeline.context import RequestContext
from appliance.pipeline.paths import PathEscapesRoot, normalise_path
from appliance.pipeline.route import Domain
from appliance.pipeline.routing import HostTable, normalise_host, valid_host
from appliance.pipeline.stage import Stage
from appliance.pipeline.verdict import Verdict

_MAX_REQUEST_ID = 200
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """32 hex characters: a random per-process prefix and a counter (unique, and cheap to make)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _valid_request_id(value: bytes) -> bool:
    return 0 < len(value) <= _MAX_REQUEST_ID and all(0x21 <= b <= 0x7E for b in value)


def _reject(status: int, reason: str) -> Verdict:
    return Verdict(status, reason, kind="reject")


class Resolve(Stage):
    name: ClassVar[str] = "resolve"

    def __init__(self, hosts: HostTable[Domain], client_ip: ClientIPResolver, unknown_host_status: int,
                 unknown_host_body: bytes, max_header_size: int) -> None:
        self.hosts = hosts
        self.client_ip = client_ip
        self.unknown = Verdict(unknown_host_status, "request.unknown_host", kind="reject", body=unknown_host_body)
        self.max_header_size = max_header_size

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        scope = ctx.scope
        host = forwarded_for = request_id = length = None
        hosts = size = 0
        chunked = False
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4
            if name == b"host":
                host = value
                hosts += 1
            elif name == b"x-forwarded-for":
                forwarded_for = value if forwarded_for is None else forwarded_for + b"," + value
            elif name == b"x-request-id":
                request_id = value
            elif name == b"accept":
                ctx.accept = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        client = scope.get("client")
        peer = client[0] if client else "0.0.0.0"
        ctx.client_port = int(client[1]) if client else 0
        ctx.client_ip, ctx.peer_trusted = self.client_ip.resolve(peer, forwarded_for)
        ctx.request_id = (request_id.decode() if ctx.peer_trusted and request_id and _valid_request_id(request_id)
                          else new_request_id())
        method = ctx.method = scope.get("method", "GET")
        if size > self.max_header_size:
            return _reject(431, "request.headers_too_large")
        if method == "CONNECT":
            return Verdict(405, "request.connect", headers=[(b"allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")],
                           kind="reject")
        if hosts != 1:  # none, or two that could route differently here and upstream
            return _reject(400, "request.host_missing" if not hosts else "request.host_repeated")
        if chunked:
            ctx.has_body = True
        elif length is not None:
            if not length.isdigit():
                return _reject(400, "request.content_length")
            ctx.content_length = int(length)
            ctx.has_body = ctx.content_length > 0
        elif scope.get("http_version") == "2" and not ctx.websocket and method not in ("GET", "HEAD"):
            ctx.has_body = True  # an HTTP/2 stream may carry a body with no length (gRPC, fetch streams)
        assert host is not None
        name = normalise_host(host)
        ctx.host = host.decode("latin-1")
        domain = self.hosts.exact(name)
        if domain is None:  # exact names are valid by construction; check the others only now
            if not valid_host(name):
                return _reject(400, "request.host_invalid")
            domain = self.hosts.lookup(name)
            if domain is None:
                return self.unknown
        ctx.domain = domain.name
        raw = scope.get("raw_path")
        try:
            ctx.path = normalise_path(raw) if raw is not None else scope["path"]
        except PathEscapesRoot:
            return _reject(400, "request.path_escapes_root")
        route = ctx.route = domain.routes.lookup(ctx.path)
        if route.max_body_size and ctx.content_length is not None and ctx.content_length > route.max_body_size:
            return _reject(413, "request.body_too_large")  # refused before a byte is read (no 100 Continue)
        return None
