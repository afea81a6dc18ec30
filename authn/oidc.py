"""OpenID Connect at the gateway: browser login (authorization code + PKCE) and bearer-token APIs.

authlib runs the OAuth 2.0 exchanges (the authorization URL with PKCE, the code for tokens, the
refresh); pyjwt verifies the ID token against the provider's JWKS (the same cache as the jwt
method: never a guessed key). The session lives in a cookie encrypted and signed with Fernet
(AES-CBC and HMAC-SHA256), so it holds no state on the gateway: a cookie changed by one byte is
refused. The login round trip keeps its state, nonce, PKCE verifier and return URL in a second
short-lived encrypted cookie, so a forged ``state`` or a replayed code finds nothing to match.
"""
from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography.fernet import Fernet, InvalidToken

from authn.jwks import JWKSCache

logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per call to the provider is noise

FLOW_COOKIE = "ew_oidc_flow"
FLOW_TTL = 600
TIMEOUT = 5.0
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class ProviderDown(Exception):
    """The OpenID provider did not answer (discovery, token or introspection endpoint)."""


class LoginFailed(Exception):
    """The callback does not complete a login this gateway started (forged state, replayed code,
    wrong nonce, a bad ID token)."""


@dataclass
class Settings:
    issuer: str
    client_id: str
    client_secret: str
    scopes: list[str]
    redirect_path: str
    logout_path: str
    post_logout_redirect_uri: str | None
    session_lifetime: float  # absolute
    session_idle: float
    cookie_name: str
    key: bytes  # a Fernet key
    bearer_only: bool = False
    introspection: bool = False
    userinfo_claims: list[str] = field(default_factory=list)
    leeway: float = 30.0


class Provider:
    """The provider's metadata (discovery) and keys, fetched lazily and kept."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer.rstrip("/")
        self.metadata: dict[str, Any] | None = None
        self.jwks: JWKSCache | None = None
        self._fetched = 0.0

    async def meta(self) -> dict[str, Any]:
        if self.metadata is None or time.monotonic() - self._fetched > 3600:
            try:
                async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                    resp = await client.get(self.issuer + "/.well-known/openid-configuration")
                    resp.raise_for_status()
                    data = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                if self.metadata is not None:
                    return self.metadata  # stale metadata beats none while the provider is down
                raise ProviderDown(f"discovery at {self.issuer}: {exc}") from exc
            if data.get("issuer", "").rstrip("/") != self.issuer:
                raise ProviderDown(f"discovery at {self.issuer} names another issuer: {data.get('issuer')!r}")
            self.metadata, self._fetched = data, time.monotonic()
            self.jwks = JWKSCache(data["jwks_uri"])
        return self.metadata


def same_site_target(value: str | None) -> str:
    """A return URL on this site only: a path, never ``//host`` or a scheme (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


class OidcFlows:
    def __init__(self, settings: Settings, provider: Provider) -> None:
        self.s = settings
        self.provider = provider
        self.fernet = Fernet(settings.key)

    # -- cookies ---------------------------------------------------------------------------------

    def seal(self, data: dict[str, Any]) -> str:
        return self.fernet.encrypt(json.dumps(data, separators=(",", ":")).encode()).decode()

    def open(self, token: str | None, ttl: float) -> dict[str, Any] | None:
        if not token:
            return None
        try:
            data: Any = json.loads(self.fernet.decrypt(token.encode(), ttl=int(ttl)))
        except (InvalidToken, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def session(self, cookie: str | None) -> dict[str, Any] | None:
        """The session when it is valid: sealed by us, within the absolute and idle timeouts."""
        data = self.open(cookie, self.s.session_lifetime)
        if data is None:
            return None
        now = time.time()
        if now - float(data.get("created", 0)) > self.s.session_lifetime or now - float(data.get("seen", 0)) > self.s.session_idle:
            return None
        return data

    # -- browser flow ----------------------------------------------------------------------------

    async def _token(self, endpoint: str, form: dict[str, str]) -> dict[str, Any]:
        """A token endpoint call with the client's credentials (client_secret_basic); a refusal
        raises LoginFailed with the provider's error, a provider that does not answer ProviderDown."""
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                resp = await client.post(endpoint, data=form, auth=(self.s.client_id, self.s.client_secret),
                                         headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ProviderDown(f"token endpoint: {exc}") from exc
        try:
            data: Any = resp.json()
        except ValueError:
            data = {}
        if resp.status_code >= 500:
            raise ProviderDown(f"token endpoint answered {resp.status_code}")
        if resp.status_code != 200 or not isinstance(data, dict) or "access_token" not in data:
            raise LoginFailed(f"the provider refused: {data.get('error') if isinstance(data, dict) else resp.status_code}")
        return data

    async def start(self, redirect_uri: str, return_to: str) -> tuple[str, str]:
        """(the provider's authorization URL, the flow cookie's value)."""
        meta = await self.provider.meta()
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url = prepare_grant_uri(meta["authorization_endpoint"], self.s.client_id, "code", redirect_uri,
                                " ".join(self.s.scopes), state, nonce=nonce,
                                code_challenge=create_s256_code_challenge(verifier), code_challenge_method="S256")
        flow = self.seal({"state": state, "nonce": nonce, "verifier": verifier, "return": same_site_target(return_to),
                          "redirect_uri": redirect_uri})
        return url, flow

    async def finish(self, flow_cookie: str | None, state: str | None, code: str | None) -> tuple[dict[str, Any], str]:
        """Complete a login: (the new session, where to send the browser)."""
        flow = self.open(flow_cookie, FLOW_TTL)
        if flow is None or not state or not code or not secrets.compare_digest(str(flow["state"]), state):
            raise LoginFailed("the state does not match a login started here")
        meta = await self.provider.meta()
        tokens = await self._token(meta["token_endpoint"], {
            "grant_type": "authorization_code", "code": code, "redirect_uri": flow["redirect_uri"],
            "code_verifier": flow["verifier"]})
        claims = await self.verify_id_token(str(tokens.get("id_token") or ""), flow["nonce"])
        now = time.time()
        session = {"sub": claims["sub"], "claims": {k: claims[k] for k in self.s.userinfo_claims if k in claims},
                   "access": tokens.get("access_token"), "refresh": tokens.get("refresh_token"),
                   "expires": now + float(tokens.get("expires_in") or 300), "created": now, "seen": now,
                   "scope": tokens.get("scope", " ".join(self.s.scopes))}
        return session, flow["return"]

    async def verify_id_token(self, token: str, nonce: str) -> dict[str, Any]:
        meta = await self.provider.meta()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise LoginFailed("no valid ID token") from exc
        allowed = [a for a in meta.get("id_token_signing_alg_values_supported", ["RS256"]) if a in ASYMMETRIC]
        if header.get("alg") not in allowed or self.provider.jwks is None:
            raise LoginFailed("the ID token's algorithm is not one the provider announced")
        found = await self.provider.jwks.key(header.get("kid"))
        if found is None or found[1] not in (None, header["alg"]):
            raise LoginFailed("the ID token's key is not in the provider's JWKS")
        try:
            claims: dict[str, Any] = jwt.decode(token, found[0].key, algorithms=[header["alg"]],
                                                audience=self.s.client_id, issuer=meta["issuer"],
                                                leeway=self.s.leeway, options={"require": ["exp", "iat", "sub"]})
        except jwt.PyJWTError as exc:
            raise LoginFailed(f"the ID token does not verify: {exc}") from exc
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise LoginFailed("the ID token's nonce is not this login's")
        return claims

    async def refresh(self, session: dict[str, Any]) -> dict[str, Any] | None:
        """New tokens before the access token expires; None when the refresh is refused."""
        if not session.get("refresh"):
            return None
        meta = await self.provider.meta()
        try:
            tokens = await self._token(meta["token_endpoint"], {"grant_type": "refresh_token",
                                                                 "refresh_token": session["refresh"]})
        except LoginFailed as exc:  # refused: the session ends
            logging.getLogger("edgeward.oidc").info("oidc: refresh refused: %s", exc)
            return None
        return {**session, "access": tokens.get("access_token"), "refresh": tokens.get("refresh_token") or session["refresh"],
                "expires": time.time() + float(tokens.get("expires_in") or 300)}

    async def logout_url(self, return_to: str | None) -> str | None:
        meta = await self.provider.meta()
        endpoint = meta.get("end_session_endpoint")
        if not endpoint:
            return None
        params = {"client_id": self.s.client_id}
        if self.s.post_logout_redirect_uri:
            params["post_logout_redirect_uri"] = self.s.post_logout_redirect_uri
        return str(endpoint) + ("&" if "?" in str(endpoint) else "?") + urlencode(params)

    # -- bearer tokens ---------------------------------------------------------------------------

    async def introspect(self, token: str) -> dict[str, Any] | None:
        """RFC 7662: the token's claims when the provider says it is active."""
        meta = await self.provider.meta()
        endpoint = meta.get("introspection_endpoint")
        if not endpoint:
            raise ProviderDown("the provider has no introspection endpoint")
        basic = base64.b64encode(f"{self.s.client_id}:{self.s.client_secret}".encode()).decode()
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                resp = await client.post(endpoint, data={"token": token}, headers={"Authorization": f"Basic {basic}"})
                resp.raise_for_status()
                data = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderDown(f"introspection: {exc}") from exc
        return data if isinstance(data, dict) and data.get("active") is True else None
