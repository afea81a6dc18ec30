"""The stage contract: one class per protection, with typed phase hooks.

Modelled on Envoy's filter callbacks, APISIX's plugin phases and mitmproxy's addons. A stage has a
``name``, the config ``section`` it reads (merged route-over-domain by ``merge_section``, the one
generic rule) with its pydantic ``schema``, async ``start``/``close`` for what it owns, and any of
the hooks below; the pipeline calls only the hooks a stage overrides, so an unused hook costs
nothing per request.

================  ==============================================================  =========
hook              when                                                            returns
================  ==============================================================  =========
request_headers   headers parsed, body not read                                   verdict?
request_body      the body read (up to ``body_want``), only if ``needs_body``     verdict?
response_headers  the upstream answered                                           verdict?
response_body     the first ``ctx.response_body_limit`` bytes of the response     verdict?
done              once per request, after the response, whatever happened        nothing
================  ==============================================================  =========

``done`` is synchronous and must not block: a consumer that writes somewhere slow hands the record
to a task or thread it owns (started in ``start``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeVar

from pydantic import BaseModel

from appliance.pipeline.context import RequestContext
from appliance.pipeline.verdict import Outcome, Verdict
from appliance.types import Headers

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """The upstream's status line and headers, as the response hooks see them."""

    status: int
    headers: Headers


class Stage:
    """Base class: override the hooks you need; the others are never called."""

    name: ClassVar[str] = ""
    section: ClassVar[str | None] = None  # config key on domains and routes; None: a global stage
    schema: ClassVar[type[BaseModel] | None] = None
    needs_body: ClassVar[bool] = False

    @property
    def body_want(self) -> int:
        """How many body bytes ``request_body`` needs (one past a limit, to see the excess)."""
        return 0

    async def start(self) -> None:
        """Acquire what the stage owns (pools, caches, writers) when its generation starts."""

    async def close(self) -> None:
        """Release it after the generation's last in-flight request has ended."""

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        return None

    async def request_body(self, ctx: RequestContext) -> Verdict | None:
        return None

    async def response_headers(self, ctx: RequestContext, response: ResponseHead) -> Verdict | None:
        return None

    async def response_body(self, ctx: RequestContext, body: bytes, complete: bool) -> Verdict | None:
        return None

    def done(self, ctx: RequestContext, outcome: Outcome) -> None:
        return None


def overrides(stage: Stage, hook: str) -> bool:
    """Whether ``stage`` implements ``hook`` itself (the pipeline skips the base class's no-ops)."""
    return getattr(type(stage), hook) is not getattr(Stage, hook)


def merge_section(domain: M | None, route: M | None) -> M | None:
    """The one merge rule for every stage's section: keys a route sets win over its domain's."""
    if route is None:
        return domain
    if domain is None:
        return route
    return domain.model_copy(update={key: getattr(route, key) for key in route.model_fields_set})
