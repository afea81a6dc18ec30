"""Admin API for rule bundles (JSON, behind the admin token): the same operations as
``edgeward bundle ...``, for scripts and the console."""
from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rules.diff import diff
from rules.errors import ActivationsCorrupt, BundleError, BundleNotFound

from appliance.bundles import (
    activate_bundle,
    activations_for,
    canary_scope,
    collect_garbage,
    domain_scope,
    export_bundle,
    import_bundle,
    promote_canary,
    store_for,
    verify_bundle,
)
from appliance.admin.live import LiveConfig
from appliance.stages.canary import report


def _error(exc: Exception) -> JSONResponse:
    status = 404 if isinstance(exc, BundleNotFound) else 500 if isinstance(exc, ActivationsCorrupt) else 422
    return JSONResponse({"error": str(exc)}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _importable(source: str, import_dirs: list[Path]) -> bool:
    """A URL goes through the importer's own checks (https and a pinned sha256); a server-local
    path only from the directories the operator listed, so an API token cannot read host files."""
    if "://" in source:
        return True
    path = Path(source).resolve()
    return any(path.is_relative_to(d.resolve()) for d in import_dirs)


def bundle_routes(live: LiveConfig) -> list[Route]:
    """Every handler reads the current config (state_dir and rules.* follow a reload) and does
    its file work, including waiting for the activation lock, in a thread."""

    async def listing(request: Request) -> Response:
        config = await live.get()
        state = config.state_dir
        try:
            active = await asyncio.to_thread(activations_for(state).active)
            manifests = await asyncio.to_thread(store_for(state).manifests)
        except BundleError as exc:
            return _error(exc)
        return JSONResponse([
            {"ref": m.ref, "digest": m.digest, "rule_count": m.rule_count, "created": m.created,
             "active": bool(active and active.digest == m.digest)}
            for m in manifests
        ])

    async def show(request: Request) -> Response:
        config = await live.get()
        state = config.state_dir
        try:
            return JSONResponse(asdict(store_for(state).resolve(request.path_params["ref"])))
        except BundleError as exc:
            return _error(exc)

    async def do_import(request: Request) -> Response:
        config = await live.get()
        state = config.state_dir
        body = await _body(request)
        if not isinstance(body.get("source"), str):
            return JSONResponse({"error": "source (a path, archive or https:// URL) is required"}, status_code=400)
        if not _importable(body["source"], config.rules.import_dirs):
            return JSONResponse({"error": "a server-local source must lie inside rules.import_dirs"}, status_code=403)
        try:
            result = await asyncio.to_thread(
                import_bundle, state, body["source"], body.get("name"), body.get("version"),
                sha256=body.get("sha256"), include=body.get("include") or [], exclude=body.get("exclude") or [])
        except BundleError as exc:
            return _error(exc)
        m = result.manifest
        return JSONResponse({"ref": m.ref, "digest": m.digest, "new": result.new, "excluded": result.excluded},
                            status_code=201 if result.new else 200)

    async def activate(request: Request) -> Response:
        config = await live.get()
        state = config.state_dir
        body = await _body(request)
        try:
            scope = domain_scope(config, body.get("domain"))
            m, entry = await asyncio.to_thread(
                activate_bundle, state, config.rules, request.path_params["ref"],
                canary_scope(scope) if body.get("canary") else scope, str(body.get("reason") or ""), "admin-api")
        except BundleError as exc:
            return _error(exc)
        return JSONResponse({"ref": m.ref, "digest": m.digest, "scope": scope, "canary": bool(body.get("canary")),
                             "at": entry.at})

    async def canary_report(request: Request) -> Response:
        config = await live.get()
        state = config.state_dir
        return JSONResponse(await asyncio.to_thread(report, state / "run" / "canary"))

    async def promote(request: Request) -> Response:
        config = await live.get()
        state = config.state_dir
        body = await _body(request)
        try:
            m = await asyncio.to_thread(promote_canary, state, config.rules, domain_scope(config, body.get("domain")),
                                        str(body.get("reason") or ""), "admin-api")
        except BundleError as exc:
            return _error(exc)
        return JSONResponse({"ref": m.ref, "digest": m.digest})

    async def rollback(request: Request) -> Response:
        config = await live.get()
        state = config.state_dir
        body = await _body(request)
        steps = body.get("steps", 1)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            return JSONResponse({"error": "steps must be a whole number of at least 1"}, status_code=400)
        try:
            entry = await asyncio.to_thread(activations_for(state).rollback, domain_scope(config, body.get("domain")), steps,
                                            str(body.get("reason") or ""), "admin-api")
        except BundleError as exc:
            return _error(exc)
        except (LookupError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse(asdict(entry))

    async def history(request: Request) -> Response:
        config = await live.get()
        state = config.state_dir
        try:
            scope = domain_scope(config, request.query_params.get("domain"))
            entries = await asyncio.to_thread(activations_for(state).history, scope)
        except BundleError as exc:
            return _error(exc)
        return JSONResponse([asdict(e) for e in entries])

    async def verify(request: Request) -> Response:
        config = await live.get()
        state = config.state_dir
        try:
            m, signature = await asyncio.to_thread(verify_bundle, state, config.rules, request.path_params["ref"])
        except BundleNotFound as exc:
            return _error(exc)
        except BundleError as exc:
            return JSONResponse({"ok": False, "problem": str(exc)}, status_code=409)
        return JSONResponse({"ok": True, "ref": m.ref, "digest": m.digest,
                             "key_id": signature.key_id if signature else None})

    async def compare(request: Request) -> Response:
        config = await live.get()
        state = config.state_dir
        store = store_for(state)
        try:
            a, b = store.resolve(request.path_params["a"]), store.resolve(request.path_params["b"])
        except BundleError as exc:
            return _error(exc)
        return JSONResponse({"a": a.ref, "b": b.ref, **asdict(diff(store.path(a), a, store.path(b), b))})

    async def export(request: Request) -> Response:
        config = await live.get()
        state = config.state_dir
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            try:
                out, m = await asyncio.to_thread(export_bundle, state, request.path_params["ref"], Path(tmp) / "b.tar.gz")
            except BundleError as exc:
                return _error(exc)
            data = out.read_bytes()
        name = f"{m.name}-{m.version}-{m.digest[:12]}.tar.gz"
        return Response(data, media_type="application/gzip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def gc(request: Request) -> Response:
        config = await live.get()
        body = await _body(request)
        removed = await asyncio.to_thread(collect_garbage, config, bool(body.get("dry_run")))
        return JSONResponse({"removed": [m.ref for m in removed], "dry_run": bool(body.get("dry_run"))})

    return [
        Route("/api/bundles", listing),
        Route("/api/bundles/gc", gc, methods=["POST"]),
        Route("/api/bundles/{ref}/export", export),
        Route("/api/bundles/import", do_import, methods=["POST"]),
        Route("/api/bundles/rollback", rollback, methods=["POST"]),
        Route("/api/bundles/history", history),
        Route("/api/bundles/canary-report", canary_report),
        Route("/api/bundles/promote", promote, methods=["POST"]),
        Route("/api/bundles/{ref}", show),
        Route("/api/bundles/{ref}/activate", activate, methods=["POST"]),
        Route("/api/bundles/{ref}/verify", verify),
        Route("/api/bundles/{a}/diff/{b}", compare),
    ]
