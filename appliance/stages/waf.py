"""The WAF stage: OWASP CRS through ModSecurity on request headers, then the body up to the limit,
and optionally on the response (headers, and the body of the inspected content types).

Every engine call releases the GIL. Where a call runs was decided by measurement (docs/waf.md,
"Where the engine runs"): the header phase and bodies up to ``INLINE_BODY`` bytes run inline on the
event loop (about 0.5-1.5 ms with CRS, against about 60 us for a hop to a thread); larger bodies
(about 5 ms per KiB of form fields) run on the worker's engine threads, so the loop keeps serving
other requests and the stall watchdog never sees a long inspection.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, TypeVar

from waf.compiler import CompiledRules
from waf.diagnostics import route_xml_errors
from waf.pcre import warn_without_jit
from waf.inspect import UNTERMINATED_QUOTE_RULE, Decision, Inspection, Outcome
from waf.policy import Exclusion, Policy

from appliance.config.waf import WafConfig
from appliance.pipeline.context import RequestContext, WafResult
from appliance.pipeline.stage import ResponseHead, Stage
from appliance.pipeline.verdict import Outcome as RequestOutcome, Verdict
from appliance.stages.canary import Canary

log = logging.getLogger("edgeward.waf")

INLINE_BODY = 1024  # bodies (request or response) above this many bytes are inspected in a thread
ENGINE_THREADS = 2  # per worker: a worker's engine calls beyond this wait their turn
LARGE_AT_ONCE = 1  # spooled bodies (over body.SPOOL_OVER) inspected at once per worker
_T = TypeVar("_T")


class EngineThreads:
    """The worker's threads for long engine calls, started on first use. Each thread routes
    libxml2's diagnostics to the log (libxml2's handler is per thread)."""

    def __init__(self, threads: int = ENGINE_THREADS) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._large: asyncio.Semaphore | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="edgeward-engine",
                                            initializer=route_xml_errors)
        return self._pool

    async def run(self, result: WafResult, call: Callable[[], _T], large: bool = False) -> _T:
        """Run ``call`` in a thread; ``result.busy`` holds it until it returns, even when the
        request is cancelled meanwhile (the transaction must outlive the call). ``large`` (a
        spooled body) calls run one at a time per worker: the engine holds several copies of the
        body while it parses one (measured: about 8x a 12 MiB multipart upload), so a worker's
        engine memory stays that of one large body while the others wait on disk."""
        if not large:
            return await self._submit(result, call)
        if self._large is None:
            self._large = asyncio.Semaphore(LARGE_AT_ONCE)
        async with self._large:
            return await self._submit(result, call)

    async def _submit(self, result: WafResult, call: Callable[[], _T]) -> _T:
        future = self._executor().submit(call)
        result.busy = future
        value = await asyncio.wrap_future(future)
        result.busy = None
        return value

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

_BODY_ERRORS = frozenset({200002, 200003, 200004, 200005, 200007, UNTERMINATED_QUOTE_RULE})
# SecResponseBodyMimeType in waf.compiler: only these response bodies are held back and inspected
_INSPECTED_TYPES = (b"text/plain", b"text/html", b"text/xml", b"application/json")


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
            Exclusion(tuple(e.rules), tuple(e.tags), e.target, e.path, tuple(m.upper() for m in e.methods), e.name)
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
        server = scope.get("server") or ("0.0.0.0", 0)
        self.client_ip = ctx.client_ip
        self.client_port = ctx.client_port
        self.server_ip = str(server[0])
        self.server_port = int(server[1] or 0)
        self.method = ctx.method  # a websocket scope has no method: its upgrade is a GET
        target = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string")
        self.target = target + b"?" + query if query else target
        version = str(scope.get("http_version", "1.1"))
        self.http_version = _VERSIONS.get(version, version)
        self.headers = scope["headers"]


class WafStage(Stage):
    name: ClassVar[str] = "waf"
    section: ClassVar[str | None] = "waf"
    schema = WafConfig
    needs_body: ClassVar[bool] = True

    def __init__(self, compiled: CompiledRules, bundle: str, bundle_digest: str, canary: Canary | None = None,
                 threads: EngineThreads | None = None) -> None:
        self.compiled = compiled
        self.policy = compiled.policy
        self.bundle = bundle
        self.bundle_digest = bundle_digest
        self.canary = canary
        self.threads = threads or EngineThreads()

    @property
    def body_want(self) -> int:
        return self.policy.body_limit + 1

    async def start(self) -> None:
        # On the event loop's thread, where the engine runs: libxml2's handler is per thread.
        if not route_xml_errors():
            log.warning("libxml2 not found: XML body parser errors go to stderr")
        warn_without_jit()

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        policy = self.policy
        started = time.perf_counter()
        result = ctx.waf = WafResult(self.bundle, self.bundle_digest, policy.mode, policy.paranoia)
        if (ctx.content_length is not None and ctx.content_length > policy.body_limit
                and policy.body_limit_action == "reject" and policy.mode == "block"):
            return Verdict(413, "waf.body_limit", details={"waf": result})  # refused before reading it
        inspection = result.inspection = Inspection(self.compiled, _RequestView(ctx), ctx.request_id)
        decision = inspection.request_headers()
        result.elapsed += time.perf_counter() - started
        if decision is not None:
            return self._conclude(ctx, result, decision)
        return None

    async def request_body(self, ctx: RequestContext) -> Verdict | None:
        result = ctx.waf
        if result is None or result.inspection is None:
            return None
        policy = self.policy
        size = ctx.body_length  # at most body_limit + 1 bytes were read
        if size > policy.body_limit and policy.body_limit_action == "reject" and policy.mode == "block":
            # The engine answers 403 for SecRequestBodyLimitAction Reject; HTTP says 413.
            self._finish(result, None)
            return Verdict(413, "waf.body_limit", details={"waf": result})
        started = time.perf_counter()
        inspection, body, path = result.inspection, ctx.body, ctx.spool.path if ctx.spool else None
        if size > INLINE_BODY:
            decision = await self.threads.run(result, lambda: inspection.request_body(body, path), large=path is not None)
        else:
            decision = inspection.request_body(body)
        result.elapsed += time.perf_counter() - started
        if policy.inspect_response and decision is None:
            return None  # the transaction stays open for the response rules
        return await self._conclude_body(ctx, result, decision)

    async def response_headers(self, ctx: RequestContext, response: ResponseHead) -> Verdict | None:
        result = ctx.waf
        if result is None or result.inspection is None:
            return None
        decision = result.inspection.response_headers(response.status, response.headers, "HTTP/1.1")
        if decision is None and _inspected_type(response.headers):
            ctx.response_body_limit = max(ctx.response_body_limit, self.policy.response_body_limit)
            return None  # concluded in response_body
        return self._conclude(ctx, result, decision)

    async def response_body(self, ctx: RequestContext, body: bytes, complete: bool) -> Verdict | None:
        result = ctx.waf
        if result is None or result.inspection is None:
            return None
        inspection, part = result.inspection, body[: self.policy.response_body_limit]
        if len(part) > INLINE_BODY:
            decision = await self.threads.run(result, lambda: inspection.response_body(part))
        else:
            decision = inspection.response_body(part)
        return self._conclude(ctx, result, decision)

    def done(self, ctx: RequestContext, outcome: RequestOutcome) -> None:
        result = ctx.waf
        if result is None or result.inspection is None:
            return
        busy = result.busy
        if busy is not None and not busy.done():  # cancelled while the engine works: free it after
            busy.add_done_callback(lambda _: self._finish(result, None))
        else:  # the response never came
            self._finish(result, None)

    def _finish(self, result: WafResult, decision: Decision | None) -> Outcome:
        assert result.inspection is not None
        outcome = result.outcome = result.inspection.finish()
        result.inspection = None
        return outcome

    async def _conclude_body(self, ctx: RequestContext, result: WafResult, decision: Decision | None) -> Verdict | None:
        """``_conclude`` after the request body; with a large body the canary's second inspection
        runs in a thread too."""
        large = ctx.body_length > INLINE_BODY
        verdict = self._conclude(ctx, result, decision, canary_inline=not large)
        canary = self.canary
        if large and canary is not None and result.outcome is not None and _canary_applies(decision):
            view, body, current = _RequestView(ctx), ctx.body, result.outcome
            path = ctx.spool.path if ctx.spool else None
            blocked = ctx.would_block or (decision is not None and decision.block)
            found = await self.threads.run(result, lambda: canary.inspect(ctx.request_id, view, body, path),
                                           large=path is not None)
            canary.record(ctx, current, blocked, result.elapsed, *found)
        return verdict

    def _conclude(self, ctx: RequestContext, result: WafResult, decision: Decision | None,
                  canary_inline: bool = True) -> Verdict | None:
        outcome = self._finish(result, decision)
        blocked = decision is not None and decision.block
        if not blocked and self.policy.mode == "detect" and _would_block(outcome, self.policy):
            ctx.would_block = True
        if canary_inline and self.canary is not None and _canary_applies(decision):
            self.canary.evaluate(ctx, _RequestView(ctx), ctx.body, outcome,
                                 blocked or ctx.would_block, result.elapsed)
        if decision is not None and decision.block:
            return Verdict(decision.status, _reason(decision, outcome), details={"waf": result})
        return None


def _canary_applies(decision: Decision | None) -> bool:
    return not (decision is not None and decision.status == 413)  # a body refused unread says nothing


def _inspected_type(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() in _INSPECTED_TYPES
    return False


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
