"""Bans over the admin API: list, add, lift (the same as ``edgeward cc bans|ban|unban``)."""
from __future__ import annotations

from typing import Any

from cc.keys import ban_value
from cc.store import Limiter
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from appliance.admin.live import LiveConfig
from appliance.config.types import parse_duration
from appliance.localredis import limiter_settings


def cc_routes(live: LiveConfig) -> list[Route]:
    limiters: dict[str, Limiter] = {}

    def limiter() -> Limiter | None:
        settings = limiter_settings(live.config)
        if settings is None:
            return None
        settings.update(timeout=2.0, workers=1)
        key = repr(sorted(settings.items()))
        if key not in limiters:
            limiters[key] = Limiter(**settings)
        return limiters[key]

    def problem(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status)

    async def bans(request: Request) -> Response:
        """``GET /api/cc/bans``; ``POST /api/cc/bans`` with ``{"key", "for": "1h", "reason"}``."""
        found = limiter()
        if found is None:
            return problem(404, "no cc rules and no redis: in the config")
        try:
            if request.method == "GET":
                return JSONResponse({"bans": await found.bans()})
            body: Any = await request.json()
            if not isinstance(body, dict) or not body.get("key") or not body.get("reason") or not body.get("for"):
                return problem(400, 'a JSON object with "key", "for" (such as 1h) and "reason"')
            seconds = parse_duration(str(body["for"]))
            key = ban_value(str(body["key"]))
            await found.ban(key, seconds, str(body["reason"]), str(body.get("author") or "admin-api"))
            return JSONResponse({"banned": key, "seconds": seconds}, status_code=201)
        except ValueError as exc:
            return problem(400, str(exc))
        except (RedisError, OSError) as exc:
            return problem(503, f"Redis: {exc}")

    async def unban(request: Request) -> Response:
        """``DELETE /api/cc/bans/{key}``."""
        found = limiter()
        if found is None:
            return problem(404, "no cc rules and no redis: in the config")
        key = ban_value(request.path_params["key"])
        try:
            lifted = await found.unban(key)
        except (RedisError, OSError) as exc:
            return problem(503, f"Redis: {exc}")
        return JSONResponse({"unbanned": key}) if lifted else problem(404, f"{key} is not banned")

    return [Route("/api/cc/bans", bans, methods=["GET", "POST"]), Route("/api/cc/bans/{key:path}", unban, methods=["DELETE"])]
