"""Reading the request body once, for whoever needs it first (the WAF, then the proxy).

What was read is kept on the request context; the proxy sends it first and then streams the rest.
"""
from __future__ import annotations

from .pipeline import RequestContext


class ClientGone(Exception):
    """The client disconnected, or its body broke framing, before the body was read."""


def declared_body(headers: list[tuple[bytes, bytes]]) -> tuple[bool, int | None]:
    """(whether a body follows, its Content-Length if declared and not chunked)."""
    length = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
    if chunked:
        return True, None
    return bool(length), length


async def read_body(ctx: RequestContext, want: int) -> None:
    """Read until ``ctx.body`` holds at least ``want`` bytes or the body is complete."""
    if ctx.body_complete or len(ctx.body) >= want:
        return
    parts = [ctx.body] if ctx.body else []
    size = len(ctx.body)
    receive = ctx.receive
    while size < want:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            parts.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            ctx.body_complete = True
            break
    ctx.body = b"".join(parts)
