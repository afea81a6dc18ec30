"""The CC stage: throttles and bans (cc/store.py), before authentication and the WAF.

At most one Redis round trip per request decides every rule of the route and every ban that
applies (the client's address, each rule's key value); busy kinds of request are admitted from
leases without one (cc/store.py). Rules keyed by ``consumer`` run in a second CC stage
after authentication (``after_auth``); all others before it. The bad-behaviour ban reads the
status of each response in ``done`` and counts it in a task, never on the request path.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import cc
from cc.challenge import COOKIE_CHALLENGE, COOKIE_TTL, PASS_COOKIE, POW_COOKIE, Challenges
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


POW_PAGE = (b'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">'
            b'<title>Checking your browser</title></head><body><p id="ew-challenge" data-token="{token}" '
            b'data-difficulty="{difficulty}">Checking your browser before you continue. This takes a moment.</p>'
            b'<noscript>Please turn on JavaScript to continue.</noscript><script>'
            + (Path(cc.__file__).parent / "static" / "pow.js").read_bytes() + b"</script></body></html>\n")


def cookies(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    jar: dict[str, str] = {}
    for name, value in headers:
        if name == b"cookie":
            for pair in value.decode("latin-1").split(";"):
                key, sep, found = pair.strip().partition("=")
                if sep and key not in jar:
                    jar[key] = found
    return jar


def header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes:
    for found, value in headers:
        if found == name:
            return bytes(value)
    return b""


def _same_target(ctx: RequestContext) -> bytes:
    """The request's own path and query, as a redirect target that stays on this site."""
    raw: bytes = ctx.scope.get("raw_path") or ctx.scope["path"].encode()
    query: bytes = ctx.scope.get("query_string") or b""
    target = b"/" + raw.lstrip(b"/")  # never //host: a protocol-relative URL would leave the site
    return target + b"?" + query if query else target


def _seconds(value: float) -> bytes:
    return str(max(1, math.ceil(value))).encode()


class CCStage(Stage):
    name: ClassVar[str] = "cc"
    section: ClassVar[str | None] = "cc"
    schema = CCConfig

    def __init__(self, rules: Sequence[Rule], limiter: Limiter, bad_behavior: BadBehaviorConfig | None = None,
                 check_bans: bool = True, challenges: Challenges | None = None) -> None:
        self.rules = tuple(rules)
        self.challenges = challenges
        self.challenged = tuple(i for i, r in enumerate(self.rules) if r.action != "reject")
        self.plan = Plan(self.rules)
        self.limiter = limiter
        self.bad = bad_behavior
        self.bad_codes = frozenset(bad_behavior.status_codes) if bad_behavior else frozenset()
        self.check_bans = check_bans
        self._tasks: set[asyncio.Task[bool]] = set()

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        view = _KeyView(ctx)
        values = [rule.value(view) for rule in self.rules]
        if self.challenged and self.challenges is not None:
            answered = self._answered(ctx, view)
            if answered is True:
                for i in self.challenged:  # a client that passed is exempt from the challenge rules
                    values[i] = None
            elif isinstance(answered, Verdict):
                return answered
        address = address_value(ctx.client_ip) if self.check_bans else None
        if self.limiter.admit(self.plan, address, values):  # a busy client's lease: nothing to await
            return None
        decision = await self.limiter.check(self.plan, address, values)
        if decision.kind == "allow":
            return None
        if decision.kind == "limited" and decision.rule is not None and decision.rule.action != "reject":
            return self._challenge(ctx, view, decision.rule)
        return self._verdict(decision)

    # -- challenges ----------------------------------------------------------------------------------

    def _answered(self, ctx: RequestContext, view: _KeyView) -> Verdict | bool | None:
        """True: the client holds a valid pass; a verdict: it just answered a challenge (a
        redirect that sets the pass); None: neither."""
        challenges = self.challenges
        assert challenges is not None
        jar = cookies(view.headers)
        if not jar:
            return None
        agent = header(view.headers, b"user-agent")
        domain, ip = ctx.domain, ctx.client_ip
        token = jar.get(PASS_COOKIE)
        if token is not None and challenges.passed(token, domain, ip, agent):
            return True
        cookie, work = jar.get(COOKIE_CHALLENGE), jar.get(POW_COOKIE)
        if (cookie is not None and challenges.cookie_answered(cookie, domain, ip, agent)) or (
                work is not None and challenges.pow_answered(work, domain, ip, agent)):
            attributes = self._attributes(ctx)
            return Verdict(307, "cc.challenge_passed", [
                (b"location", _same_target(ctx)),
                (b"set-cookie", f"{PASS_COOKIE}={challenges.pass_token(domain, ip, agent)}; Max-Age="
                                f"{int(challenges.pass_for)}{attributes}".encode()),
                (b"set-cookie", f"{COOKIE_CHALLENGE}=; Max-Age=0{attributes}".encode()),
                (b"set-cookie", f"{POW_COOKIE}=; Max-Age=0; Path=/; SameSite=Lax".encode()),
            ], kind="challenge", body=b"Passed; continue to the page.\n")
        return None

    @staticmethod
    def _attributes(ctx: RequestContext) -> str:
        return "; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if ctx.scope.get("scheme") == "https" else "")

    def _challenge(self, ctx: RequestContext, view: _KeyView, rule: Rule) -> Verdict:
        challenges = self.challenges
        assert challenges is not None
        agent = header(view.headers, b"user-agent")
        details = {"rule": rule.name}
        if rule.action == "cookie_challenge":
            token = challenges.cookie_token(ctx.domain, ctx.client_ip, agent)
            return Verdict(307, "cc.challenge", [
                (b"location", _same_target(ctx)),
                (b"set-cookie", f"{COOKIE_CHALLENGE}={token}; Max-Age={COOKIE_TTL}{self._attributes(ctx)}".encode()),
            ], details, kind="challenge", body=b"Checking your browser; follow the redirect with cookies on.\n")
        token = challenges.pow_token(ctx.domain, ctx.client_ip, agent)
        page = POW_PAGE.replace(b"{token}", token.encode()).replace(b"{difficulty}", str(challenges.difficulty).encode())
        return Verdict(429, "cc.challenge", [(b"content-type", b"text/html; charset=utf-8"), (b"retry-after", b"1")],
                       details, kind="challenge", body=page)

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
