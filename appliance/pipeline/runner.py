"""Runs the stages of a route, hook by hook, in the order the stage list gives.

Compiled once per route when a config generation is built: each hook has its own tuple of bound
methods, so the hot path loops only over stages that implement it. An exception inside a stage is
a 500 verdict with kind ``error`` (fail closed), never a silent pass.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from appliance.pipeline.context import RequestContext
from appliance.pipeline.stage import ResponseHead, Stage, overrides
from appliance.pipeline.verdict import Outcome, Verdict

log = logging.getLogger("edgeward.pipeline")


def _error(stage: Stage, ctx: RequestContext) -> Verdict:
    log.exception("stage %s failed on request %s", stage.name, ctx.request_id)
    return Verdict(500, f"{stage.name}.error", kind="error")


def _implementing(stages: tuple[Stage, ...], hook: str) -> tuple[Stage, ...]:
    return tuple(stage for stage in stages if overrides(stage, hook))


def finish(stages: tuple[Stage, ...], ctx: RequestContext, outcome: Outcome) -> None:
    """Run ``done`` hooks. Every consumer runs, even if one fails: a broken metric must not lose
    the audit record."""
    for stage in stages:
        try:
            stage.done(ctx, outcome)
        except Exception:
            log.exception("stage %s failed in done() on request %s", stage.name, ctx.request_id)


class Pipeline:
    """The compiled stage list of one route (or the global front and done stages)."""

    __slots__ = ("stages", "_headers", "_body", "_resp_headers", "_resp_body", "_done", "needs_body", "body_want")

    def __init__(self, stages: Sequence[Stage]) -> None:
        for stage in stages:
            if not stage.name:
                raise TypeError(f"stage {stage!r} has no name")
            if stage.section is not None and stage.schema is None:
                raise TypeError(f"stage {stage.name} reads config section {stage.section!r} but declares no schema")
        self.stages = tuple(stages)
        self._headers = _implementing(self.stages, "request_headers")
        self._body = tuple(s for s in self.stages if s.needs_body)
        self._resp_headers = _implementing(self.stages, "response_headers")
        self._resp_body = _implementing(self.stages, "response_body")
        self._done = _implementing(self.stages, "done")
        self.needs_body = bool(self._body)
        self.body_want = max((s.body_want for s in self._body), default=0)

    @property
    def has_request_hooks(self) -> bool:
        return bool(self._headers or self._body)

    @property
    def has_response_hooks(self) -> bool:
        return bool(self._resp_headers)

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        for stage in self._headers:
            try:
                verdict = await stage.request_headers(ctx)
            except Exception:
                return _error(stage, ctx)
            if verdict is not None:
                return verdict
        return None

    async def request_body(self, ctx: RequestContext) -> Verdict | None:
        for stage in self._body:
            try:
                verdict = await stage.request_body(ctx)
            except Exception:
                return _error(stage, ctx)
            if verdict is not None:
                return verdict
        return None

    async def response_headers(self, ctx: RequestContext, response: ResponseHead) -> Verdict | None:
        for stage in self._resp_headers:
            try:
                verdict = await stage.response_headers(ctx, response)
            except Exception:
                return _error(stage, ctx)
            if verdict is not None:
                return verdict
        return None

    async def response_body(self, ctx: RequestContext, body: bytes, complete: bool) -> Verdict | None:
        for stage in self._resp_body:
            try:
                verdict = await stage.response_body(ctx, body, complete)
            except Exception:
                return _error(stage, ctx)
            if verdict is not None:
                return verdict
        return None

    @property
    def done_stages(self) -> tuple[Stage, ...]:
        return self._done

    def done(self, ctx: RequestContext, outcome: Outcome) -> None:
        finish(self._done, ctx, outcome)

    async def start(self) -> None:
        for stage in self.stages:
            await stage.start()

    async def close(self) -> None:
        for stage in reversed(self.stages):
            try:
                await stage.close()
            except Exception:
                log.exception("stage %s failed to close", stage.name)

