"""The audit records over the admin API: search with cursor pagination, one record, statistics."""
from __future__ import annotations

import asyncio
import ipaddress
import sqlite3
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from appliance.admin.live import LiveConfig
from appliance.exclusions import ExclusionError, add, diff, propose
from appliance.reloader import request_reload
from appliance.observe.auditstore import AuditStoreError, Query, connect, database_path, get, search, stats

MAX_LIMIT = 1000


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    return int(value) if value not in (None, "") else None


def _float(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    return float(value) if value not in (None, "") else None


def audit_problem(state_dir: Path) -> str | None:
    """Why the audit database cannot be read and written, or None (for /readyz)."""
    try:
        db = connect(database_path(state_dir))
        try:
            db.execute("SELECT count(*) FROM audit WHERE id = ''").fetchone()
        finally:
            db.close()
    except (AuditStoreError, sqlite3.Error) as exc:
        return str(exc)
    return None


def audit_routes(live: LiveConfig) -> list[Route]:
    def db() -> sqlite3.Connection:
        return connect(database_path(live.config.state_dir), readonly=True)

    def problem(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status)

    async def listing(request: Request) -> Response:
        """``GET /api/audit?domain=&rule=&ip=&stage=&status=&since=&until=&text=&limit=&cursor=``:
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
            query = Query(domain=request.query_params.get("domain") or None, rule=_int(request, "rule"), ip=ip,
                          stage=request.query_params.get("stage") or None, status=_int(request, "status"),
                          since=_float(request, "since"), until=_float(request, "until"),
                          text=request.query_params.get("text") or None, limit=limit, before=before)
        except ValueError as exc:
            return problem(400, f"bad filter: {exc}")
        try:
            records = await asyncio.to_thread(lambda: search(db(), query))
        except AuditStoreError as exc:
            return problem(503, str(exc))
        last: dict[str, Any] | None = records[-1] if len(records) == limit else None
        return JSONResponse({"records": records, "next": f"{last['time']!r}:{last['id']}" if last else None})

    async def one(request: Request) -> Response:
        try:
            record = await asyncio.to_thread(lambda: get(db(), request.path_params["id"]))
        except AuditStoreError as exc:
            return problem(503, str(exc))
        return JSONResponse(record) if record is not None else problem(404, "no such audit record")

    async def summary(request: Request) -> Response:
        try:
            since, until, top = _float(request, "since"), _float(request, "until"), _int(request, "top") or 10
        except ValueError as exc:
            return problem(400, f"bad filter: {exc}")
        try:
            return JSONResponse(await asyncio.to_thread(lambda: stats(db(), since, until, top)))
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
            record = await asyncio.to_thread(lambda: get(db(), request.path_params["id"]))
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
