"""The audit records over the admin API: search with cursor pagination, one record, statistics."""
from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from appliance.admin.live import LiveConfig
from appliance.exclusions import ExclusionError, add, diff, propose, with_hits
from appliance.reloader import request_reload
from appliance.config.schema import Config
from appliance.observe.auditstore import AuditStore, AuditStoreError, Query, open_store

MAX_LIMIT = 1000


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    return int(value) if value not in (None, "") else None


def _float(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    return float(value) if value not in (None, "") else None


T = TypeVar("T")


def audit_problem(config: Config) -> str | None:
    """Why the audit store cannot be read and written, or None (for /readyz)."""
    try:
        store = open_store(config.audit.store, config.state_dir)
        try:
            store.check()
        finally:
            store.close()
    except AuditStoreError as exc:
        return str(exc)
    return None


def annotated(result: dict[str, Any], config: Config) -> dict[str, Any]:
    """``stats`` with each exclusion's details beside its hits."""
    return {**result, "exclusions": with_hits(config.state_dir, result["exclusions"])}


def with_store(config: Config, use: Callable[[AuditStore], T]) -> T:
    """Open the store, use it, close it (in a thread: the store's calls block)."""
    store = open_store(config.audit.store, config.state_dir, readonly=True)
    try:
        return use(store)
    finally:
        store.close()


def audit_routes(live: LiveConfig) -> list[Route]:
    async def read(use: Callable[[AuditStore], T]) -> T:
        return await asyncio.to_thread(with_store, live.config, use)

    def problem(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status)

    async def listing(request: Request) -> Response:
        """``GET /api/audit?domain=&route=&rule=&tag=&ip=&country=&stage=&status=&consumer=&since=&until=&text=&limit=&cursor=``:
        newest first; ``next`` is the cursor for the following page (null on the last)."""
        try:
            cursor = request.query_params.get("cursor")
            before = None
            if cursor:
                stamp, _, rid = cursor.partition(":")
                before = (float(stamp), rid)
            ip = request.query_params.get("ip") or None
            if ip:
                ipaddress.ip_network(ip, strict=False)
            limit = min(_int(request, "limit") or 100, MAX_LIMIT)
            text = {name: request.query_params.get(name) or None
                    for name in ("domain", "route", "tag", "country", "stage", "consumer")}
            query = Query(**text, rule=_int(request, "rule"), ip=ip, status=_int(request, "status"),
                          since=_float(request, "since"), until=_float(request, "until"),
                          text=request.query_params.get("text") or None, limit=limit, before=before)
        except ValueError as exc:
            return problem(400, f"bad filter: {exc}")
        try:
            records = await read(lambda store: store.search(query))
        except AuditStoreError as exc:
            return problem(503, str(exc))
        last: dict[str, Any] | None = records[-1] if len(records) == limit else None
        return JSONResponse({"records": records, "next": f"{last['time']!r}:{last['id']}" if last else None})

    async def one(request: Request) -> Response:
        try:
            record = await read(lambda store: store.get(request.path_params["id"]))
        except AuditStoreError as exc:
            return problem(503, str(exc))
        return JSONResponse(record) if record is not None else problem(404, "no such audit record")

    async def summary(request: Request) -> Response:
        try:
            since, until, top = _float(request, "since"), _float(request, "until"), _int(request, "top") or 10
        except ValueError as exc:
            return problem(400, f"bad filter: {exc}")
        try:
            result = await read(lambda store: store.stats(since, until, top))
            return JSONResponse(annotated(result, live.config))
        except AuditStoreError as exc:
            return problem(503, str(exc))

    async def exclusion(request: Request) -> Response:
        """``POST /api/audit/{id}/exclusion`` with ``{"reason": ..., "rule"?, "target"?, "scope"?,
        "expires_in"? (seconds), "apply"?: false}``: the proposal, and with ``apply`` it is added and
        the workers reload."""
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("a JSON object")
        except ValueError as exc:
            return problem(400, f"bad request body: {exc}")
        try:
            record = await read(lambda store: store.get(request.path_params["id"]))
        except AuditStoreError as exc:
            return problem(503, str(exc))
        if record is None:
            return problem(404, "no such audit record")
        try:
            expires = float(body["expires_in"]) + time.time() if body.get("expires_in") else None
            entry = propose(record, str(body.get("reason") or ""), str(body.get("author") or "admin-api"),
                            int(body["rule"]) if body.get("rule") is not None else None, body.get("target"),
                            str(body.get("scope") or "path"), expires)
        except (ExclusionError, ValueError, TypeError) as exc:
            return problem(422, str(exc))
        applied = bool(body.get("apply"))
        if applied:
            config = live.config
            await asyncio.to_thread(add, config.state_dir, entry)
            await asyncio.to_thread(request_reload, config)
        return JSONResponse({"exclusion": entry, "diff": diff(entry), "applied": applied})

    return [
        Route("/api/audit", listing),
        Route("/api/audit/{id}/exclusion", exclusion, methods=["POST"]),
        Route("/api/audit/stats", summary),
        Route("/api/audit/{id}", one),
    ]
