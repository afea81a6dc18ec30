"""The CC stage: throttles and bans (cc/store.py), before authentication and the WAF.

One Redis round trip per request decides every rule of the route and every ban that applies
(the client's address, each rule's key value). Rules keyed by ``consumer`` run in a second CC stage
after authentication (``after_auth``); all others before it. The bad-behaviour ban reads the
status of each response in ``done`` and counts it in a task, never on the request path.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import ClassVar

from cc.keys import address_value
from cc.store import Decision, Limiter, Plan, Rule

from appliance.config.cc import BadBehaviorConfig, CCConfig
from appliance.pipeline.context import RequestContext
from appliance.pipeline.stage import Stage
from appliance.pipeline.verdict import Outcome, Verdict


class _KeyView:
    """The ``cc.keys.KeyRequest`` of a request context."""

    __slots__ = ("client_ip", "consumer", "headers", "query")

    def __init__(self, ctx: RequestContext) -> None:
        self.client_ip = ctx.client_ip
        self.consumer = ctx.consumer
        self.headers = ctx.scope.get("headers") or ()
        self.query = ctx.scope.get("query_string") or b""


def _seconds(value: float) -> bytes:
    return str(max(1, math.ceil(value))).encode()


class CCStage(Stage):
    name: ClassVar[str] = "cc"
    section: ClassVar[str | None] = "cc"
    schema = CCConfig

    def __init__(self, rules: Sequence[Rule], limiter: Limiter, bad_behavior: BadBehaviorConfig | None = None,
                 check_bans: bool = True) -> None:
        self.rules = tuple(rules)
        self.plan = Plan(self.rules, check_bans)
        self.limiter = limiter
        self.bad = bad_behavior
        self.bad_codes = frozenset(bad_behavior.status_codes) if bad_behavior else frozenset()
        self.check_bans = check_bans
        self._tasks: set[asyncio.Task[bool]] = set()

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        view = _KeyView(ctx)
        values = [rule.value(view) for rule in self.rules]
        decision = await self.limiter.check(self.plan, address_value(ctx.client_ip) if self.check_bans else None, values)
        return None if decision.kind == "allow" else self._verdict(decision)

    def _verdict(self, decision: Decision) -> Verdict:
        rule = decision.rule
        if decision.kind == "banned":
            headers = [(b"retry-after", _seconds(decision.retry_after))] if decision.retry_after else []
            return Verdict(403, "cc.banned", headers, {"ban": decision.ban, "rule": rule.name if rule else None})
        assert rule is not None
        if decision.kind == "unavailable":
            return Verdict(503, "cc.unavailable", [(b"retry-after", b"1")], {"rule": rule.name}, kind="error")
        retry = _seconds(decision.retry_after)
        name = rule.name.encode()
        headers = [
            (b"retry-after", retry),
            (b"ratelimit-policy", b'"%s";q=%d;w=%d' % (name, rule.amount, max(1, round(rule.period)))),
            (b"ratelimit", b'"%s";r=0;t=%s' % (name, retry)),
        ]
        return Verdict(429, "cc.limit", headers, {"rule": rule.name})

    def done(self, ctx: RequestContext, outcome: Outcome) -> None:
        bad = self.bad
        if bad is None or outcome.status not in self.bad_codes:
            return
        task = asyncio.get_running_loop().create_task(
            self.limiter.bad_response(address_value(ctx.client_ip), bad.window, bad.threshold, bad.ban_for))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
