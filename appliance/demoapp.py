"""The built-in demo upstream for ``edgeward demo``: a tiny app that shows what reached it."""
from __future__ import annotations

import json

from aiohttp import web

PAGE = """<!doctype html><html><head><title>Edgeward demo app</title></head><body>
<h1>Edgeward demo app</h1><p>This page came through Edgeward. Try <a href="/echo">/echo</a>.</p>
</body></html>
"""


async def index(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": dict(request.headers),
            "body_bytes": len(body),
        },
        dumps=lambda o: json.dumps(o, indent=2) + "\n",
    )


def run(host: str, port: int) -> None:
    app = web.Application(client_max_size=0)
    app.router.add_get("/", index)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/{tail:.*}", echo)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
