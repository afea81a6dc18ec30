"""Responses the appliance writes itself (errors, blocks): generic text, never internals, always
an ``X-Request-Id``. JSON or HTML by the client's Accept, plain text otherwise (curl-friendly).
"""
from __future__ import annotations

import json
from http import HTTPStatus
from html import escape

from appliance.types import Headers, Send


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def local_response(
    status: int, request_id: str, accept: bytes | None, message: str | None = None
) -> tuple[Headers, bytes]:
    """Headers and body of a local response; ``message`` must be safe to show to anyone."""
    text = message or _phrase(status)
    if accept and b"json" in accept:
        body = json.dumps({"status": status, "error": text, "request_id": request_id}).encode()
        ctype = b"application/json"
    elif accept and b"text/html" in accept:
        body = (
            f"<!doctype html><html><head><title>{status} {escape(_phrase(status))}</title></head>"
            f"<body><h1>{status} {escape(_phrase(status))}</h1><p>{escape(text)}</p>"
            f"<p>Request id: <code>{escape(request_id)}</code></p></body></html>\n"
        ).encode()
        ctype = b"text/html; charset=utf-8"
    else:
        body = f"{status} {text}\nrequest id: {request_id}\n".encode()
        ctype = b"text/plain; charset=utf-8"
    headers = [
        (b"content-type", ctype),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"cache-control", b"no-store"),
    ]
    return headers, body


async def send_local(
    send: Send,
    status: int,
    request_id: str,
    accept: bytes | None,
    message: str | None = None,
    extra: Headers | None = None,
    body: bytes | None = None,
) -> int:
    """Write a whole local response; return the body size for the access log. ``body`` replaces
    the generic text (as plain text) where the operator configured one."""
    if body is None:
        headers, body = local_response(status, request_id, accept, message)
    else:
        typed = any(name == b"content-type" for name, _ in extra or ())
        headers = [*([] if typed else [(b"content-type", b"text/plain; charset=utf-8")]),
                   (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id.encode()),
                   (b"cache-control", b"no-store")]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return len(body)
