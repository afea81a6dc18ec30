"""Reading the request body once, for whoever needs it first (a stage, then the proxy).

What was read is kept on the request context; the proxy sends it first and then streams the rest.
"""
from __future__ import annotations

from appliance.pipeline.context import RequestContext


class ClientGone(Exception):
    """The client disconnected, or its body broke framing, before the body was read."""


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
