"""The top-level ``consumers`` and the ``auth`` section of domains and routes (the authn stage's schema)."""
from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlsplit
from typing import Annotated, Any, Literal

from authn.consumers import parse_scrypt
from pydantic import Field, field_validator, model_validator

from appliance.config.types import Duration, Size, Strict

_NAME = r"^[A-Za-z0-9_.@-]{1,128}$"
_HEADER = r"^[A-Za-z0-9-]{1,64}$"


class KeyCredentialConfig(Strict):
    type: Literal["key"]
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")  # edgeward consumer hash-key
    expires: datetime | None = None


class BasicCredentialConfig(Strict):
    type: Literal["basic"]
    username: str = Field(pattern=r"^[^:\s]{1,128}$")
    scrypt: str  # edgeward consumer hash-password
    expires: datetime | None = None

    @field_validator("scrypt")
    @classmethod
    def _hash(cls, value: str) -> str:
        parse_scrypt(value)
        return value


class HmacCredentialConfig(Strict):
    """An HMAC secret must be recoverable, so it is never stored hashed: it comes from the
    environment or from a file only the appliance can read."""

    type: Literal["hmac"]
    key_id: str = Field(pattern=r"^[A-Za-z0-9_.@:-]{1,128}$")
    secret_env: str | None = None
    secret_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> HmacCredentialConfig:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("needs exactly one of secret_env or secret_file")
        return self


Credential = Annotated[KeyCredentialConfig | BasicCredentialConfig | HmacCredentialConfig, Field(discriminator="type")]


class ConsumerConfig(Strict):
    name: str = Field(pattern=_NAME)
    groups: list[Annotated[str, Field(pattern=_NAME)]] = []
    credentials: list[Credential] = []


class KeyMethodConfig(Strict):
    header: str | None = "apikey"
    query: str | None = None
    bearer: bool = False  # also Authorization: Bearer KEY

    @field_validator("header")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", value):
            raise ValueError(f"{value!r} is not a header name")
        return value


class BasicMethodConfig(Strict):
    realm: str = "edgeward"


Algorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                    "ES256", "ES384", "ES512", "EdDSA"]


class JwtKeyConfig(Strict):
    """One signing key, pinned to one algorithm."""

    kid: str | None = None  # when set, only tokens naming this kid use it
    algorithm: Algorithm
    secret_env: str | None = None  # HS*: the environment variable that holds the shared secret
    public_key: str | None = None  # the others: a PEM public key

    @model_validator(mode="after")
    def _material(self) -> JwtKeyConfig:
        symmetric = self.algorithm.startswith("HS")
        if symmetric and (not self.secret_env or self.public_key):
            raise ValueError(f"{self.algorithm} takes secret_env (the secret never goes in the file)")
        if not symmetric and (not self.public_key or self.secret_env):
            raise ValueError(f"{self.algorithm} takes public_key (PEM)")
        return self


class JwtMethodConfig(Strict):
    keys: list[JwtKeyConfig] = []
    jwks_url: str | None = None  # https, or http on a loopback address
    jwks_algorithms: list[Algorithm] = ["RS256", "ES256"]  # what a JWKS key may verify (a key's own alg wins)
    issuers: list[str] = []  # iss must be one of these (checked when set)
    audiences: list[str] = []  # aud must name one of these (checked when set)
    leeway: Duration = 30.0
    required_claims: list[str] = ["exp"]
    consumer_claim: str = "sub"  # names the consumer (a configured one brings its groups)
    claims_to_headers: dict[str, str] = {}  # claim -> upstream header (any client copy is dropped)
    header: bool = True  # Authorization: Bearer
    query: str | None = None
    cookie: str | None = None

    @field_validator("jwks_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost")):
                raise ValueError("must be https:// (http:// only on a loopback address)")
        return value

    @field_validator("jwks_algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        if any(a.startswith("HS") for a in value):
            raise ValueError("a JWKS key verifies asymmetric algorithms only (HS* keys go in keys: with secret_env)")
        return value

    @model_validator(mode="after")
    def _some_key(self) -> JwtMethodConfig:
        if not self.keys and not self.jwks_url:
            raise ValueError("needs keys or jwks_url")
        return self


class HmacMethodConfig(Strict):
    format: Literal["apisix", "higress", "rfc9421"] = "apisix"  # Authorization: Signature; X-Ca-*; Signature-Input
    clock_skew: Duration = 300.0  # the Date header must be this close to now; signatures are remembered twice as long
    signed_headers: list[str] = []  # besides @request-target and date, which are always required
    validate_body: bool = False  # the body must match a signed Digest header (SHA-256)
    max_body: Size = 1024 * 1024  # a body to validate may not be larger (413)
    algorithms: list[Literal["hmac-sha256", "hmac-sha512"]] = ["hmac-sha256", "hmac-sha512"]
    failure_status: Literal[401, 400] = 401  # 400: what Higress answers, for clients written against it


class OidcMethodConfig(Strict):
    issuer: str  # https://, or http:// on a loopback address
    client_id: str
    client_secret_env: str  # the environment variable that holds the client secret
    scopes: list[str] = ["openid", "email", "profile", "offline_access"]
    redirect_path: str = "/.edgeward/oidc/callback"
    logout_path: str = "/.edgeward/oidc/logout"
    post_logout_redirect_uri: str | None = None
    session_lifetime: Duration = 8 * 3600.0  # absolute
    session_idle: Duration = 3600.0
    cookie_name: str = Field(default="ew_session", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    session_store: Literal["cookie", "redis"] = "cookie"  # redis: the cookie holds an id; the tokens stay in Redis
    bearer_only: bool = False  # an API: access tokens only, 401 instead of a redirect
    introspection: bool = False  # check opaque access tokens with RFC 7662 (JWT ones are checked locally)
    audiences: list[str] = []  # bearer tokens must name one of these in aud (when set)
    required_scopes: list[str] = []
    required_groups: list[str] = []  # any one of them
    groups_claim: str = "groups"
    access_token_header: Literal["authorization", "x-access-token", "none"] = "authorization"
    userinfo_claims: list[str] = ["sub", "email", "name", "groups"]  # X-Userinfo: base64 JSON of these

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost")):
            raise ValueError("must be https:// (http:// only on a loopback address)")
        return value

    @field_validator("redirect_path", "logout_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith("//"):
            raise ValueError("must be a path such as /.edgeward/oidc/callback")
        return value


class AuthConfig(Strict):
    enabled: bool = True
    methods: list[Literal["key", "basic", "jwt", "hmac", "oidc"]] = []  # any one suffices (oidc: alone)
    allow: list[str] = []  # consumers or groups; empty: every authenticated consumer
    anonymous: str | None = None  # the consumer of requests without credentials (else 401)
    hide_credentials: bool = True  # the upstream never sees the credential
    key: KeyMethodConfig = KeyMethodConfig()
    basic: BasicMethodConfig = BasicMethodConfig()
    jwt: JwtMethodConfig | None = None
    hmac: HmacMethodConfig = HmacMethodConfig()
    oidc: OidcMethodConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        """``auth: off`` (YAML reads a bare off as false) switches authentication off on a route."""
        return {"enabled": False} if value is False or value == "off" else value


class IdentityHeadersConfig(Strict):
    """The headers that tell the upstream who the consumer is; a client's own copies are dropped
    on every route, authenticated or not."""

    username: str = Field(default="X-Consumer-Username", pattern=_HEADER)
    groups: str = Field(default="X-Consumer-Groups", pattern=_HEADER)
    credential: str = Field(default="X-Credential-Identifier", pattern=_HEADER)

    def names(self) -> tuple[bytes, bytes, bytes]:
        return (self.username.lower().encode(), self.groups.lower().encode(), self.credential.lower().encode())
