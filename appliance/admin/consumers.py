"""Consumers over the admin API: list, add, rotate a key, remove (as ``edgeward consumer``)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from appliance.admin.live import LiveConfig
from appliance.config.types import parse_duration
from appliance.consumers import ConsumerError, add, listing, remove, rotate
from appliance.reloader import request_reload


def consumer_routes(live: LiveConfig) -> list[Route]:
    def problem(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status)

    async def body_of(request: Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def collection(request: Request) -> Response:
        """``GET /api/consumers``; ``POST /api/consumers`` with ``{"name", "groups"?, "key"?: true,
        "basic"?: {"username", "password"}, "expires_in"?: "90d"}``: 201 with the new key (shown once)."""
        config = live.config
        if request.method == "GET":
            try:
                return JSONResponse({"consumers": await asyncio.to_thread(listing, config)})
            except ConsumerError as exc:
                return problem(503, str(exc))
        body = await body_of(request)
        if body is None or not isinstance(body.get("name"), str):
            return problem(400, 'a JSON object with "name"')
        basic = body.get("basic")
        if basic is not None and not (isinstance(basic, dict) and isinstance(basic.get("username"), str)
                                      and isinstance(basic.get("password"), str) and len(basic["password"]) >= 8):
            return problem(400, '"basic" is {"username", "password"} with a password of 8 characters or more')
        try:
            expires = time.time() + parse_duration(str(body["expires_in"])) if body.get("expires_in") else None
            key = await asyncio.to_thread(add, config, body["name"], list(body.get("groups") or []),
                                          bool(body.get("key", True)),
                                          (basic["username"], basic["password"]) if basic else None, expires)
        except ValueError as exc:
            return problem(400, str(exc))
        except ConsumerError as exc:
            return problem(409, str(exc))
        await asyncio.to_thread(request_reload, config)
        return JSONResponse({"name": body["name"], "key": key}, status_code=201)

    async def rotation(request: Request) -> Response:
        """``POST /api/consumers/{name}/rotate`` with ``{"grace"?: "7d"}``: a new key (shown once)."""
        body = await body_of(request) or {}
        try:
            grace = parse_duration(str(body.get("grace", "7d")))
            key = await asyncio.to_thread(rotate, live.config, request.path_params["name"], grace)
        except ValueError as exc:
            return problem(400, str(exc))
        except ConsumerError as exc:
            return problem(404, str(exc))
        await asyncio.to_thread(request_reload, live.config)
        return JSONResponse({"name": request.path_params["name"], "key": key, "grace": grace})

    async def one(request: Request) -> Response:
        """``DELETE /api/consumers/{name}``."""
        try:
            await asyncio.to_thread(remove, live.config, request.path_params["name"])
        except ConsumerError as exc:
            return problem(404, str(exc))
        await asyncio.to_thread(request_reload, live.config)
        return JSONResponse({"removed": request.path_params["name"]})

    return [Route("/api/consumers", collection, methods=["GET", "POST"]),
            Route("/api/consumers/{name}/rotate", rotation, methods=["POST"]),
            Route("/api/consumers/{name}", one, methods=["DELETE"])]
