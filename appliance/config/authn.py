"""The top-level ``consumers`` and the ``auth`` section of domains and routes (the authn stage's schema)."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from authn.consumers import parse_scrypt
from pydantic import Field, field_validator, model_validator

from appliance.config.types import Strict

_NAME = r"^[A-Za-z0-9_.@-]{1,128}$"


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


Credential = Annotated[KeyCredentialConfig | BasicCredentialConfig, Field(discriminator="type")]


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


class AuthConfig(Strict):
    enabled: bool = True
    methods: list[Literal["key", "basic"]] = []  # any one suffices
    allow: list[str] = []  # consumers or groups; empty: every authenticated consumer
    anonymous: str | None = None  # the consumer of requests without credentials (else 401)
    hide_credentials: bool = True  # the upstream never sees the credential
    key: KeyMethodConfig = KeyMethodConfig()
    basic: BasicMethodConfig = BasicMethodConfig()

    @model_validator(mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        """``auth: off`` (YAML reads a bare off as false) switches authentication off on a route."""
        return {"enabled": False} if value is False or value == "off" else value
