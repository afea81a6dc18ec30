"""A real upstream for the tests: an aiohttp server with endpoints that exercise the proxy.

Run as a process: ``python -m tests.servers.upstream --port N --name A [--tls CERT KEY] [--log FILE]``.
Every request line it receives is appended to ``--log`` so tests can prove what reached it.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import ssl

from aiohttp import WSMsgType, web


def build(name: str, log_path: str | None) -> web.Application:
    log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if log:
            log.write(f"{request.method} {request.raw_path}\n")
        return await handler(request)

    async def echo(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({
            "server": name, "method": request.method, "path": request.raw_path,
            "version": f"{request.version.major}.{request.version.minor}",
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_bytes": size, "body_sha256": digest.hexdigest(),
        }, headers={"X-Upstream": name, "Connection": "keep-alive", "Keep-Alive": "timeout=5",
                    "X-Hop": "secret", "Proxy-Authenticate": "Basic"})

    async def download(request: web.Request) -> web.StreamResponse:
        total = int(request.match_info["n"])
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = total
        await resp.prepare(request)
        chunk = b"\0" * (1 << 20)
        sent = 0
        while sent < total:
            part = chunk[: min(len(chunk), total - sent)]
            await resp.write(part)
            sent += len(part)
        await resp.write_eof()
        return resp

    async def sleep(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.match_info["s"]))
        return web.Response(text=f"slept {name}\n", headers={"X-Upstream": name})

    async def slow_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first part\n")
        await asyncio.sleep(float(request.match_info["s"]))
        await resp.write(b"second part\n")
        return resp

    async def reset(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status\n", headers={"X-Upstream": name})

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat", "superchat"))
        await ws.prepare(request)
        await ws.send_str(f"hello from {name} via {request.headers.get('X-Forwarded-For', '')}")
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    async def events(request: web.Request) -> web.StreamResponse:
        """Server-sent events: one event now, the next only after ``s`` seconds."""
        resp = web.StreamResponse(headers={"Content-Type": request.query.get("type", "text/event-stream")})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await asyncio.sleep(float(request.match_info["s"]))
        await resp.write(b"data: second\n\n")
        await resp.write_eof()
        return resp

    async def think(request: web.Request) -> web.Response:
        """Answers after ``s`` seconds; logs whether the proxy gave up waiting first."""
        try:
            await asyncio.sleep(float(request.match_info["s"]))
        except asyncio.CancelledError:
            if log:
                log.write(f"ABORTED {request.raw_path}\n")
            raise
        if log:
            log.write(f"ANSWERED {request.raw_path}\n")
        return web.Response(text="thought\n")

    async def own_headers(request: web.Request) -> web.Response:
        return web.Response(text="own\n", headers={"Connection": "X-Private, keep-alive", "X-Private": "hop",
                                                   "X-Request-Id": "from-upstream", "X-Kept": "yes"})

    async def ws_close(request: web.Request) -> web.WebSocketResponse:
        """Sends one message, then closes with code 4001 and a reason."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("bye soon")
        await ws.close(code=4001, message=b"origin says bye")
        return ws

    async def ws_record_close(request: web.Request) -> web.WebSocketResponse:
        """Logs the close code and reason the client's close arrived with."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.CLOSE:
                if log:
                    log.write(f"WSCLOSE {msg.data} {msg.extra}\n")
                break
            if msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
                break
        return ws

    async def ws_refuse(request: web.Request) -> web.Response:
        return web.Response(status=400, text="no websocket for you\n")

    app = web.Application(middlewares=[record], client_max_size=0)
    app.router.add_get("/events/{s}", events)
    app.router.add_get("/think/{s}", think)
    app.router.add_get("/own-headers", own_headers)
    app.router.add_get("/ws-close", ws_close)
    app.router.add_get("/ws-record-close", ws_record_close)
    app.router.add_get("/ws-refuse", ws_refuse)
    app.router.add_get("/bytes/{n}", download)
    app.router.add_get("/sleep/{s}", sleep)
    app.router.add_get("/slow-body/{s}", slow_body)
    app.router.add_get("/reset", reset)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="A")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--log")
    args = parser.parse_args()
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*args.tls)
    web.run_app(build(args.name, args.log), host="127.0.0.1", port=args.port, ssl_context=ctx,
                print=None, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)


if __name__ == "__main__":
    main()
