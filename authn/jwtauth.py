"""JWT bearer tokens (pyjwt): HS*, RS*, PS*, ES*, EdDSA, each key pinned to its algorithm.

A token's ``alg`` only picks among the algorithms the operator configured for the key its ``kid``
names (RFC 8725 2.1): no ``none``, no HS/RS confusion. Keys are inline (a PEM public key, or an
HMAC secret from the environment) or from a JWKS URL. ``iss`` and ``aud`` are checked when
configured, ``exp``/``nbf``/``iat`` with leeway, and required claims must be present.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import jwt

from authn.consumers import Consumer, Identity, Registry
from authn.jwks import JWKSCache
from authn.request import INVALID, AuthRequest, Result, header_values

SYMMETRIC = ("HS256", "HS384", "HS512")
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


@dataclass(frozen=True)
class StaticKey:
    kid: str | None
    algorithm: str
    key: Any  # the HMAC secret (bytes) or a public key object


@dataclass(frozen=True)
class JwtSettings:
    keys: Sequence[StaticKey]
    jwks: JWKSCache | None
    jwks_algorithms: Sequence[str]
    issuers: Sequence[str]
    audiences: Sequence[str]
    leeway: float
    required: Sequence[str]
    consumer_claim: str
    claims_to_headers: Mapping[str, str]
    header: bytes | None  # Authorization (Bearer)
    query: bytes | None
    cookie: bytes | None


class JwtAuth:
    challenge = b'Bearer realm="edgeward"'

    def __init__(self, registry: Registry, settings: JwtSettings) -> None:
        self.registry = registry
        self.s = settings

    def _tokens(self, request: AuthRequest) -> set[bytes]:
        found: set[bytes] = set()
        s = self.s
        if s.header is not None:
            for value in header_values(request, s.header):
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer" and token.strip():
                    found.add(token.strip())
        if s.query is not None and request.query:
            for pair in request.query.split(b"&"):
                name, _, value = pair.partition(b"=")
                if unquote_to_bytes(name) == s.query:
                    found.add(unquote_to_bytes(value))
        if s.cookie is not None:
            for value in header_values(request, b"cookie"):
                for pair in value.split(b";"):
                    name, sep, token = pair.strip().partition(b"=")
                    if sep and name == s.cookie:
                        found.add(token)
        return found

    async def _key(self, header: dict[str, Any]) -> tuple[Any, str] | None:
        alg, kid = header.get("alg"), header.get("kid")
        for static in self.s.keys:
            if static.algorithm == alg and (static.kid is None or static.kid == kid):
                return static.key, static.algorithm
        if self.s.jwks is not None and alg in self.s.jwks_algorithms:
            found = await self.s.jwks.key(kid if isinstance(kid, str) else None)
            if found is not None and found[1] in (None, alg):  # a key the IdP pinned to one algorithm keeps it
                return found[0].key, str(alg)
        return None

    async def verify(self, token: bytes) -> dict[str, Any] | None:
        s = self.s
        try:
            header = jwt.get_unverified_header(token)
            chosen = await self._key(header)
            if chosen is None:
                return None
            key, algorithm = chosen
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[algorithm], audience=list(s.audiences) or None,
                issuer=list(s.issuers) or None, leeway=s.leeway,
                options={"require": list(s.required), "verify_aud": bool(s.audiences)})
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        return claims

    async def authenticate(self, request: AuthRequest) -> tuple[Result, dict[str, Any]]:
        tokens = self._tokens(request)
        if not tokens:
            return None, {}
        if len(tokens) > 1:
            return INVALID, {}
        token = next(iter(tokens))
        claims = await self.verify(token)
        if claims is None:
            return INVALID, {}
        subject = claims.get(self.s.consumer_claim)
        if not isinstance(subject, str) or not subject:
            return INVALID, {}
        consumer = self.registry.consumers.get(subject, Consumer(subject))
        return Identity(consumer, "jwt:" + subject), claims
