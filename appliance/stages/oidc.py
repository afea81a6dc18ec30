"""The auth stage with OpenID Connect (authn/oidc.py): single sign-on for browsers, access tokens
for APIs, at the gateway.

A browser without a session is sent to the provider (302) and comes back to ``redirect_path``;
the callback sets the session cookie and returns it to the page it asked for (on this site only).
Requests with ``Authorization: Bearer`` are checked as access tokens (a JWT against the provider's
keys, an opaque one by introspection). Non-browser requests and ``bearer_only`` routes get 401
with ``WWW-Authenticate: Bearer``, never a redirect. A provider that does not answer is a 503 page.
"""
from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qs

import jwt
from redis.exceptions import RedisError
from authn.consumers import Consumer, Registry
from authn.oidc import FLOW_COOKIE, FLOW_TTL, LoginFailed, OidcFlows, ProviderDown

from appliance.config.authn import AuthConfig, OidcMethodConfig
from appliance.pipeline.context import RequestContext
from appliance.pipeline.stage import Stage
from appliance.pipeline.verdict import Verdict
from appliance.stages.cc import cookies, header

log = logging.getLogger("edgeward.oidc")


def _key(session_id: str) -> str:
    return f"ew:{{{session_id}}}:oidc"
REFRESH_BEFORE = 60.0  # seconds before the access token expires
SEEN_EVERY = 60.0  # the idle clock in the cookie moves at most once a minute (one Set-Cookie a minute)
INTROSPECTED = 30.0  # an introspection answer is reused this long


class OidcStage(Stage):
    name: ClassVar[str] = "auth"
    section: ClassVar[str | None] = "auth"
    schema = AuthConfig

    def __init__(self, cfg: AuthConfig, oidc: OidcMethodConfig, flows: OidcFlows, registry: Registry,
                 redis: Any = None) -> None:
        self.cfg = oidc
        self.redis = redis  # session_store: redis (redis-py client of the node's Limiter); None: in the cookie
        self.flows = flows
        self.registry = registry
        self.allow = frozenset(cfg.allow)
        self.unauthenticated = Verdict(401, "auth.unauthenticated", [(b"www-authenticate", b'Bearer realm="edgeward"')])
        self.invalid_token = Verdict(401, "auth.unauthenticated", [
            (b"www-authenticate", b'Bearer realm="edgeward", error="invalid_token"')])
        self.forbidden = Verdict(403, "auth.forbidden", [
            (b"www-authenticate", b'Bearer realm="edgeward", error="insufficient_scope"')])
        self.unavailable = Verdict(503, "auth.provider_unavailable", [(b"retry-after", b"5")], kind="error",
                                   body=b"The sign-in service is unavailable; try again in a moment.\n")
        self._introspected: dict[str, tuple[dict[str, Any] | None, float]] = {}
        self.hidden = frozenset({b"authorization"})
        self.cookie = oidc.cookie_name

    # -- helpers ---------------------------------------------------------------------------------

    def _attributes(self, ctx: RequestContext, max_age: int) -> str:
        secure = "; Secure" if ctx.scope.get("scheme") == "https" else ""
        return f"; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}"

    def _origin(self, ctx: RequestContext) -> str:
        return f"{ctx.scope.get('scheme', 'http')}://{ctx.host}"

    @staticmethod
    def _target(ctx: RequestContext) -> str:
        raw: bytes = ctx.scope.get("raw_path") or ctx.scope["path"].encode()
        query: bytes = ctx.scope.get("query_string") or b""
        return (raw + (b"?" + query if query else b"")).decode("latin-1")

    def _is_browser(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        return b"text/html" in header(headers, b"accept")

    def _authorized(self, ctx: RequestContext, claims: dict[str, Any], scope: str) -> Verdict | None:
        c = self.cfg
        scopes = set(scope.split())
        groups = claims.get(c.groups_claim) or []
        groups = [groups] if isinstance(groups, str) else [str(g) for g in groups] if isinstance(groups, list) else []
        subject = str(claims.get("sub", ""))
        consumer = self.registry.consumers.get(subject, Consumer(subject, tuple(groups)))
        ctx.consumer, ctx.consumer_groups = consumer.name, tuple(groups) or consumer.groups
        if c.required_scopes and not set(c.required_scopes) <= scopes:
            return self.forbidden
        if c.required_groups and not set(c.required_groups) & set(groups):
            return self.forbidden
        if self.allow and consumer.name not in self.allow and not self.allow & set(ctx.consumer_groups):
            return self.forbidden
        return None

    def _upstream(self, ctx: RequestContext, claims: dict[str, Any], token: str | None, credential: str) -> None:
        ctx.credential = credential
        ctx.drop_headers = self.hidden | {b"x-access-token", b"x-userinfo"}
        info = {k: claims[k] for k in self.cfg.userinfo_claims if k in claims}
        ctx.add_headers.append((b"x-userinfo", base64.b64encode(json.dumps(info, separators=(",", ":")).encode())))
        if token and self.cfg.access_token_header == "authorization":
            ctx.add_headers.append((b"authorization", b"Bearer " + token.encode()))
        elif token and self.cfg.access_token_header == "x-access-token":
            ctx.add_headers.append((b"x-access-token", token.encode()))

    # -- the hook --------------------------------------------------------------------------------

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        headers: Sequence[tuple[bytes, bytes]] = ctx.scope.get("headers") or ()
        ctx.secret_headers = self.hidden
        try:
            if ctx.path == self.cfg.redirect_path and not self.cfg.bearer_only:
                return await self._callback(ctx, headers)
            if ctx.path == self.cfg.logout_path and not self.cfg.bearer_only:
                return await self._logout(ctx)
            bearer = [v for v in (value.strip() for name, value in headers if name == b"authorization")
                      if v[:7].lower() == b"bearer "]
            if bearer:
                return await self._bearer(ctx, bearer)
            if self.cfg.bearer_only:
                return self.unauthenticated
            jar = cookies(headers)
            session = await self._load(jar.get(self.cookie))
            if session is not None:
                return await self._with_session(ctx, session)
            if not self._is_browser(headers) or ctx.method not in ("GET", "HEAD"):
                return self.unauthenticated
            url, flow = await self.flows.start(self._origin(ctx) + self.cfg.redirect_path, self._target(ctx))
            return Verdict(302, "auth.login_required", [
                (b"location", url.encode()),
                (b"set-cookie", f"{FLOW_COOKIE}={flow}{self._attributes(ctx, FLOW_TTL)}".encode()),
            ], kind="challenge", body=b"Signing in.\n")
        except ProviderDown as exc:
            log.warning("oidc: %s", exc)
            return self.unavailable
        except (RedisError, OSError) as exc:  # the session store: closed, never a pass
            log.warning("oidc: the session store failed: %s", exc)
            return self.unavailable

    async def _callback(self, ctx: RequestContext, headers: Sequence[tuple[bytes, bytes]]) -> Verdict | None:
        query = parse_qs((ctx.scope.get("query_string") or b"").decode("latin-1"))
        jar = cookies(headers)
        clear_flow = (b"set-cookie", f"{FLOW_COOKIE}={self._attributes(ctx, 0)}".encode())
        if "error" in query:
            return Verdict(401, "auth.login_failed", [clear_flow], body=b"Sign-in was not completed.\n")
        try:
            session, return_to = await self.flows.finish(jar.get(FLOW_COOKIE), (query.get("state") or [None])[0],
                                                         (query.get("code") or [None])[0])
        except LoginFailed as exc:
            log.info("oidc: login refused: %s", exc)
            return Verdict(401, "auth.login_failed", [clear_flow], body=b"Sign-in failed; start again from the page.\n")
        cookie = f"{self.cookie}={await self._save(session, None)}{self._attributes(ctx, int(self.cfg.session_lifetime))}"
        return Verdict(302, "auth.login_complete", [(b"location", return_to.encode()), clear_flow,
                                                   (b"set-cookie", cookie.encode())], kind="challenge",
                       body=b"Signed in.\n")

    async def _logout(self, ctx: RequestContext) -> Verdict:
        if self.redis is not None:  # the server-side session ends too, not only the browser's cookie
            handle = self.flows.open(cookies(ctx.scope.get("headers") or ()).get(self.cookie), self.cfg.session_lifetime)
            if handle is not None and isinstance(handle.get("id"), str):
                await self.redis.delete(_key(handle["id"]))
        target = await self.flows.logout_url(None) or "/"
        return Verdict(302, "auth.logout", [(b"location", target.encode()),
                                            (b"set-cookie", f"{self.cookie}={self._attributes(ctx, 0)}".encode())],
                       kind="challenge", body=b"Signed out.\n")

    async def _with_session(self, ctx: RequestContext, session: dict[str, Any]) -> Verdict | None:
        now = time.time()
        changed = False
        if session.get("expires", 0) - now < REFRESH_BEFORE:
            refreshed = await self.flows.refresh(session)
            if refreshed is None:  # the provider ended it: sign in again
                ctx.response_extra.append((b"set-cookie", f"{self.cookie}={self._attributes(ctx, 0)}".encode()))
                return self.unauthenticated
            session, changed = refreshed, True
        if now - float(session.get("seen", 0)) > SEEN_EVERY:
            session["seen"], changed = now, True
        if changed:
            value = await self._save(session, session.get("_id"))
            if self.redis is None:  # with Redis the cookie (the session's id) stays as it is
                cookie = f"{self.cookie}={value}{self._attributes(ctx, int(self.cfg.session_lifetime))}"
                ctx.response_extra.append((b"set-cookie", cookie.encode()))
        claims = {"sub": session["sub"], **session.get("claims", {})}
        verdict = self._authorized(ctx, claims, str(session.get("scope", "")))
        if verdict is None:
            self._upstream(ctx, claims, session.get("access"), "oidc:" + str(session["sub"]))
        return verdict

    # -- where sessions live -----------------------------------------------------------------------

    async def _load(self, cookie: str | None) -> dict[str, Any] | None:
        if self.redis is None:
            return self.flows.session(cookie)
        handle = self.flows.open(cookie, self.cfg.session_lifetime)
        if handle is None or not isinstance(handle.get("id"), str):
            return None
        raw = await self.redis.get(_key(handle["id"]))
        if raw is None:
            return None
        session = self.flows.session(raw.decode())  # sealed in Redis too: the same timeouts, the same checks
        if session is not None:
            session["_id"] = handle["id"]
        return session

    async def _save(self, session: dict[str, Any], session_id: str | None) -> str:
        """The cookie's value: the sealed session, or (Redis) the sealed id of the stored one."""
        if self.redis is None:
            return self.flows.seal(session)
        session_id = session_id or secrets.token_urlsafe(24)
        stored = {k: v for k, v in session.items() if k != "_id"}
        await self.redis.set(_key(session_id), self.flows.seal(stored), px=int(self.cfg.session_lifetime * 1000))
        return self.flows.seal({"id": session_id})

    async def _bearer(self, ctx: RequestContext, values: list[bytes]) -> Verdict | None:
        if len(values) != 1:
            return self.invalid_token
        token = values[0][7:].strip().decode("latin-1")
        claims = await self._token_claims(token)
        if claims is None:
            return self.invalid_token
        if self.cfg.audiences:  # a valid token for another audience: known, but not allowed here
            aud = claims.get("aud")
            if not ({aud} if isinstance(aud, str) else set(aud or [])) & set(self.cfg.audiences):
                return self.forbidden
        verdict = self._authorized(ctx, claims, str(claims.get("scope", "")))
        if verdict is None:
            self._upstream(ctx, claims, token, "oidc:" + str(claims.get("sub", claims.get("client_id", ""))))
        return verdict

    async def _token_claims(self, token: str) -> dict[str, Any] | None:
        flows, c = self.flows, self.cfg
        if token.count(".") == 2:  # a JWT access token: checked here against the provider's keys
            meta = await flows.provider.meta()
            try:
                head = jwt.get_unverified_header(token)
            except jwt.PyJWTError:
                return None
            found = await flows.provider.jwks.key(head.get("kid")) if flows.provider.jwks else None
            if found is None or head.get("alg") not in ("RS256", "PS256", "ES256", "EdDSA") or found[1] not in (None, head["alg"]):
                return None
            try:
                claims: dict[str, Any] = jwt.decode(token, found[0].key, algorithms=[head["alg"]], issuer=meta["issuer"],
                                                    leeway=30, options={"require": ["exp", "iat"], "verify_aud": False})
            except jwt.PyJWTError:
                return None
            return claims
        if not c.introspection:
            return None
        now = time.monotonic()
        cached = self._introspected.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        answer = await flows.introspect(token)
        if len(self._introspected) > 10_000:
            self._introspected.clear()
        self._introspected[token] = (answer, now + INTROSPECTED)
        return answer
