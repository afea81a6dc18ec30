"""The authn stage: who is this request? After the CC throttles and before the WAF.

Several methods mean any one suffices; a wrong credential for one method is not rescued by
another method (a client sending a bad key and no password gets 401, whatever else it sends). 401
carries a ``WWW-Authenticate`` challenge per method and never says which part was wrong; 403 when
the consumer is not allowed here. The consumer's name, groups and credential identifier go to the
upstream as X-Consumer-Username, X-Consumer-Groups and X-Credential-Identifier; the proxy drops
any copy the client sent, on every route.
"""
from __future__ import annotations

from collections.abc import Sequence
import json
from typing import Any, ClassVar
from urllib.parse import unquote_to_bytes

from authn.basic import BasicAuth
from authn.consumers import Consumer, Identity, Registry
from authn.hmacauth import NEED_BODY, HigressHmac, HmacAuth, MessageSignatures
from authn.jwtauth import JwtAuth
from authn.key import KeyAuth
from authn.request import INVALID

from appliance.config.authn import AuthConfig
from appliance.pipeline.context import RequestContext
from appliance.pipeline.stage import Stage
from appliance.pipeline.verdict import Verdict


class _View:
    __slots__ = ("headers", "query", "method", "target", "scheme")

    def __init__(self, ctx: RequestContext) -> None:
        self.headers: Sequence[tuple[bytes, bytes]] = ctx.scope.get("headers") or ()
        self.query: bytes = ctx.scope.get("query_string") or b""
        self.method: str = ctx.method
        raw: bytes = ctx.scope.get("raw_path") or ctx.scope["path"].encode()
        self.target = raw + b"?" + self.query if self.query else raw
        self.scheme: str = ctx.scope.get("scheme", "http")


def _without_argument(query: bytes, name: bytes) -> bytes:
    return b"&".join(p for p in query.split(b"&") if unquote_to_bytes(p.partition(b"=")[0].replace(b"+", b" ")) != name)


class AuthnStage(Stage):
    name: ClassVar[str] = "auth"
    section: ClassVar[str | None] = "auth"
    schema = AuthConfig

    def __init__(self, cfg: AuthConfig, registry: Registry, jwt: JwtAuth | None = None,
                 hmac: HmacAuth | HigressHmac | MessageSignatures | None = None) -> None:
        self.key = KeyAuth(registry, cfg.key.header, cfg.key.query, cfg.key.bearer) if "key" in cfg.methods else None
        self.basic = BasicAuth(registry, cfg.basic.realm) if "basic" in cfg.methods else None
        self.jwt = jwt
        self.hmac = hmac
        self.max_body = cfg.hmac.max_body
        self.claims_to_headers = [(claim, header.lower().encode()) for claim, header in
                                  (jwt.s.claims_to_headers.items() if jwt else ())]
        self.allow = frozenset(cfg.allow)
        self.anonymous: Consumer | None = registry.consumers[cfg.anonymous] if cfg.anonymous else None
        self.hide = cfg.hide_credentials
        challenges = ([self.key.challenge] if self.key else []) + ([self.basic.challenge] if self.basic else []) + (
            [self.jwt.challenge] if self.jwt else []) + ([self.hmac.challenge] if self.hmac else [])
        self.unauthenticated = Verdict(401, "auth.unauthenticated", [(b"www-authenticate", c) for c in challenges])
        self.forbidden = Verdict(403, "auth.forbidden")
        self.hmac_failed = Verdict(cfg.hmac.failure_status, "auth.unauthenticated", self.unauthenticated.headers)
        hidden: set[bytes] = set()
        if self.key is not None and self.key.header is not None:
            hidden.add(self.key.header)
        if self.key is not None and self.key.bearer or self.basic is not None:
            hidden |= {b"authorization", b"proxy-authorization"} if self.basic is not None else {b"authorization"}
        if jwt is not None and jwt.s.header or hmac is not None:
            hidden.add(b"authorization")
        self.hidden = frozenset(hidden)
        self.claim_headers = frozenset(h for _, h in self.claims_to_headers)

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        view = _View(ctx)
        ctx.secret_headers = self.hidden  # whatever happens next, the audit record hides them
        ctx.drop_headers = (self.hidden | self.claim_headers) if self.hide else self.claim_headers
        if self.hide and self.key is not None and self.key.query is not None and view.query:
            ctx.scope["query_string"] = _without_argument(view.query, self.key.query)
        identity: Identity | None = None
        claims: dict[str, Any] = {}
        for method in (self.key, self.basic, self.jwt, self.hmac):
            if method is None:
                continue
            if isinstance(method, KeyAuth):
                result: Any = method.authenticate(view)
            elif isinstance(method, (BasicAuth, HmacAuth, HigressHmac, MessageSignatures)):
                result = await method.authenticate(view)
            else:
                result, claims = await method.authenticate(view)
            if result == NEED_BODY:  # a signed form: the fields are part of the signature
                ctx.auth_pending = True
                return None
            if result is INVALID:
                return self.hmac_failed if method is self.hmac else self.unauthenticated
            if result is not None:
                identity = result
                break
        return self._conclude(ctx, identity, claims)

    def _conclude(self, ctx: RequestContext, identity: Identity | None, claims: dict[str, Any]) -> Verdict | None:
        if identity is None:
            if self.anonymous is None:
                return self.unauthenticated
            ctx.consumer, ctx.consumer_groups = self.anonymous.name, self.anonymous.groups
            return None
        consumer = identity.consumer
        if self.allow and consumer.name not in self.allow and not self.allow.intersection(consumer.groups):
            ctx.consumer = consumer.name  # the audit record says who was refused
            return self.forbidden
        ctx.consumer, ctx.consumer_groups, ctx.credential = consumer.name, consumer.groups, identity.credential
        for claim, header in self.claims_to_headers:
            value = claims.get(claim)
            if value is not None:
                text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
                ctx.add_headers.append((header, text.encode("utf-8", "replace").replace(b"\r", b"").replace(b"\n", b"")))
        return None


class AuthnBodyStage(AuthnStage):
    """HMAC with the body: ``validate_body`` (a signed Digest, or Content-MD5) and the X-Ca
    format's signed form fields, checked once the body is read."""

    needs_body: ClassVar[bool] = True

    @property
    def body_want(self) -> int:
        return self.max_body + 1

    async def request_body(self, ctx: RequestContext) -> Verdict | None:
        if self.hmac is None or not (ctx.auth_pending or (ctx.credential or "").startswith("hmac:")):
            return None  # another method proved this request
        if ctx.spool is not None or len(ctx.body) > self.max_body:
            return Verdict(413, "auth.body_too_large")
        view = _View(ctx)
        if ctx.auth_pending:
            ctx.auth_pending = False
            assert isinstance(self.hmac, HigressHmac)
            result = await self.hmac.authenticate(view, ctx.body)
            if not isinstance(result, Identity):
                return self.hmac_failed
            verdict = self._conclude(ctx, result, {})
            if verdict is not None:
                return verdict
        if not self.hmac.body_matches(view, ctx.body):
            return self.hmac_failed
        return None
