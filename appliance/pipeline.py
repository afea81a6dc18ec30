"""The request pipeline: a fixed, ordered list of stages compiled per route when config loads.

A stage inspects the request context and returns ``None`` (go on) or a ``Verdict`` (stop here). Only
the pipeline writes responses, so a stage never touches the ASGI ``send``. An exception inside a
stage is a deny with status 500 (fail closed), never a silent pass.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from .types import Headers, Receive, Scope

log = logging.getLogger("edgeward.pipeline")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a request stops: HTTP status, a stable dotted reason code and details for the audit."""

    status: int
    reason: str
    headers: Headers = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RequestContext:
    """What stages may read about one request; secrets never go here."""

    request_id: str
    scope: Scope
    client_ip: str
    peer_trusted: bool
    host: str
    domain: str
    route: str
    receive: Receive
    verdict: Verdict | None = None
    annotations: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""  # request body read so far (by a stage or the proxy); sent upstream first
    body_complete: bool = False
    would_block: bool = False  # a detect-mode protection would have stopped this request
    response_hook: Any = None  # callable (status, headers, first body bytes) -> Verdict | None


class Stage(Protocol):
    name: ClassVar[str]

    async def __call__(self, ctx: RequestContext) -> Verdict | None: ...


class Pipeline:
    """Runs stages in order; the first verdict wins."""

    __slots__ = ("stages",)

    def __init__(self, stages: tuple[Stage, ...]) -> None:
        for stage in stages:
            if not getattr(stage, "name", None):
                raise TypeError(f"stage {stage!r} has no name")
        self.stages = stages

    async def run(self, ctx: RequestContext) -> Verdict | None:
        for stage in self.stages:
            try:
                verdict = await stage(ctx)
            except Exception:
                log.exception("stage %s failed on request %s", stage.name, ctx.request_id)
                return Verdict(500, f"{stage.name}.error")
            if verdict is not None:
                return verdict
        return None


EMPTY = Pipeline(())
