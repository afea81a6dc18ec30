"""The WAF stage: OWASP CRS through ModSecurity on request headers, then the body up to the limit,
and optionally on the response (headers and body up to a limit).

The engine holds the GIL while it evaluates, so this runs inline on the event loop (a thread would
buy nothing) and WAF capacity scales with worker processes. Evaluation is bounded by ModSecurity's
own limits (PCRE match limits, body, argument and JSON depth limits) set by the compiler.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from waf.compiler import CompiledRules
from waf.inspect import Decision, Inspection, Outcome
from waf.policy import Exclusion, Policy

from ..body import ClientGone, declared_body, read_body
from ..config import WafConfig
from ..pipeline import RequestContext, Verdict
from .canary import Canary

_BODY_ERRORS = frozenset({200002, 200003, 200004, 200005, 200007})


def merged(domain: WafConfig, route: WafConfig | None) -> WafConfig:
    """A route's WAF settings over its domain's: keys the route sets win."""
    if route is None:
        return domain
    return domain.model_copy(update={key: getattr(route, key) for key in route.model_fields_set})


def policy_of(cfg: WafConfig) -> Policy:
    return Policy(
        mode=cfg.mode,
        paranoia=cfg.paranoia,
        detection_paranoia=cfg.detection_paranoia,
        inbound_threshold=cfg.inbound_threshold,
        outbound_threshold=cfg.outbound_threshold,
        allowed_methods=tuple(cfg.allowed_methods) if cfg.allowed_methods is not None else None,
        allowed_content_types=tuple(cfg.allowed_content_types) if cfg.allowed_content_types is not None else None,
        body_limit=cfg.body_limit,
        body_limit_action=cfg.body_limit_action,
        inspect_response=cfg.inspect_response,
        response_body_limit=cfg.response_body_limit,
        pcre_match_limit=cfg.pcre_match_limit,
        exclusions=tuple(
            Exclusion(tuple(e.rules), tuple(e.tags), e.target, e.path, tuple(m.upper() for m in e.methods))
            for e in cfg.exclusions
        ),
        directives=cfg.directives,
    )


_VERSIONS = {"1": "1.0", "2": "2.0"}


class _RequestView:
    """The ``waf.inspect.RequestView`` of a request context."""

    __slots__ = ("client_ip", "client_port", "server_ip", "server_port", "method", "target", "http_version", "headers")
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    method: str
    target: bytes
    http_version: str
    headers: Sequence[tuple[bytes, bytes]]

    def __init__(self, ctx: RequestContext) -> None:
        scope = ctx.scope
        client = scope.get("client") or ("0.0.0.0", 0)
        server = scope.get("server") or ("0.0.0.0", 0)
        self.client_ip = ctx.client_ip
        self.client_port = int(client[1])
        self.server_ip = str(server[0])
        self.server_port = int(server[1] or 0)
        self.method = scope["method"]
        target = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string")
        self.target = target + b"?" + query if query else target
        version = str(scope.get("http_version", "1.1"))
        self.http_version = _VERSIONS.get(version, version)
        self.headers = scope["headers"]


class WafStage:
    name: ClassVar[str] = "waf"

    def __init__(self, compiled: CompiledRules, bundle: str, bundle_digest: str, canary: Canary | None = None) -> None:
        self.compiled = compiled
        self.policy = compiled.policy
        self.bundle = bundle
        self.bundle_digest = bundle_digest
        self.canary = canary

    async def __call__(self, ctx: RequestContext) -> Verdict | None:
        if self.canary is None:
            return await self._inspect(ctx)
        started = time.perf_counter()
        verdict = await self._inspect(ctx)
        elapsed = time.perf_counter() - started
        if verdict is None or verdict.status != 413:
            body = ctx.body[: self.policy.body_limit]
            current = ctx.annotations.get("waf_outcome")
            self.canary.evaluate(ctx, _RequestView(ctx), body, current, verdict is not None or ctx.would_block, elapsed)
        return verdict

    async def _inspect(self, ctx: RequestContext) -> Verdict | None:
        policy = self.policy
        inspection = Inspection(self.compiled, _RequestView(ctx), ctx.request_id)
        decision = inspection.request_headers()
        if decision is None:
            has_body, _ = declared_body(ctx.scope["headers"])
            body = b""
            if has_body:
                try:
                    await read_body(ctx, policy.body_limit + 1)
                except ClientGone:
                    return Verdict(400, "request.body_malformed")
                body = ctx.body
                if len(body) > policy.body_limit:
                    # The engine answers 403 for SecRequestBodyLimitAction Reject; HTTP says 413.
                    if policy.body_limit_action == "reject" and policy.mode == "block":
                        record = ctx.annotations["waf"] = WafRecord(self.bundle, policy.mode, None)
                        return Verdict(413, "waf.body_limit", details={"waf": record})
                    body = body[: policy.body_limit]
            decision = inspection.request_body(body)
        if policy.inspect_response and decision is None:
            ctx.response_hook = _ResponseHook(self, inspection, ctx)
            return None
        return self.conclude(ctx, inspection, decision)

    def conclude(self, ctx: RequestContext, inspection: Inspection, decision: Decision | None) -> Verdict | None:
        outcome = inspection.finish()
        record = WafRecord(self.bundle, self.policy.mode, outcome)
        ctx.annotations["waf"] = record
        if decision is not None and decision.block:
            return Verdict(decision.status, _reason(decision, outcome), details={"waf": record})
        if self.policy.mode == "detect" and _would_block(outcome, self.policy):
            ctx.would_block = True
        return None


class WafRecord:
    """What the audit record needs of the WAF's work on one request; matches are decoded lazily."""

    __slots__ = ("bundle", "mode", "outcome")

    def __init__(self, bundle: str, mode: str, outcome: Outcome | None) -> None:
        self.bundle, self.mode, self.outcome = bundle, mode, outcome

    def as_dict(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "bundle": self.bundle,
            "mode": self.mode,
            "anomaly_score": o.anomaly_score if o else 0,
            "phase": o.decision.phase if o and o.decision else ("request_body" if o is None else None),
            "matches": [
                {"rule_id": m.rule_id, "message": m.message, "severity": m.severity, "data": m.data,
                 "matched": m.matched, "phase": m.phase, "tags": list(m.tags), "disruptive": m.disruptive}
                for m in (o.matches if o else [])
            ],
        }


class _ResponseHook:
    """Called by the proxy with the upstream's status, headers and first body bytes."""

    def __init__(self, stage: WafStage, inspection: Inspection, ctx: RequestContext) -> None:
        self.stage = stage
        self.inspection = inspection
        self.ctx = ctx
        self.limit = stage.policy.response_body_limit

    def __call__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Verdict | None:
        decision = self.inspection.response_headers(status, headers, "HTTP/1.1")
        if decision is None:
            decision = self.inspection.response_body(body[: self.limit])
        return self.stage.conclude(self.ctx, self.inspection, decision)


def _reason(decision: Decision, outcome: Outcome) -> str:
    if decision.status == 413:
        return "waf.body_limit"
    if decision.phase.startswith("response"):
        return "waf.response"
    if _BODY_ERRORS.intersection(outcome.rule_ids):
        return "waf.body_error"
    return "waf.anomaly"


def _would_block(outcome: Outcome, policy: Policy) -> bool:
    return outcome.anomaly_score >= policy.inbound_threshold or bool(
        _BODY_ERRORS.intersection(outcome.rule_ids) or {949110, 959100}.intersection(outcome.rule_ids))
