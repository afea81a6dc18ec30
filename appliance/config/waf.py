"""The ``waf`` section of domains and routes (the WAF stage's schema)."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from appliance.config.types import Size, Strict


def _off(value: Any) -> Any:
    """YAML 1.1 reads a bare ``off`` as false; operators mean the word."""
    return "off" if value is False else value


_TARGET = re.compile(r"^[A-Z_]+(:[^\s\"',|;]+)?$")


_SAFE = re.compile(r"^[^\s\"',]+$")


class ExclusionConfig(Strict):
    """Remove rules or one target from them; optionally only under ``path`` and for ``methods``."""

    rules: list[int] = []
    tags: list[str] = []
    target: str | None = None
    path: str | None = None
    methods: list[str] = []
    reason: str = ""
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")  # named: its hits are counted (audit stats)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is not None and not _TARGET.match(value):
            raise ValueError(f"{value!r} is not a ModSecurity target such as ARGS:q or REQUEST_COOKIES:sid")
        return value

    @field_validator("path")
    @classmethod
    def _exclusion_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or not _SAFE.match(value)):
            raise ValueError("a path starts with / and has no spaces, quotes or commas")
        return value

    @field_validator("tags", "methods")
    @classmethod
    def _words(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _SAFE.match(value):
                raise ValueError(f"{value!r} has spaces, quotes or commas")
        return values

    @model_validator(mode="after")
    def _something(self) -> ExclusionConfig:
        if not self.rules and not self.tags:
            raise ValueError("an exclusion names rules or tags")
        return self


class WafConfig(Strict):
    """Per domain, and per route over its domain's (keys set on the route win)."""

    mode: Annotated[Literal["block", "detect", "off"], BeforeValidator(_off)] = "off"
    bundle: str | None = None
    paranoia: int = Field(default=1, ge=1, le=4)
    detection_paranoia: int | None = Field(default=None, ge=1, le=4)
    inbound_threshold: int = Field(default=5, ge=1)
    outbound_threshold: int = Field(default=4, ge=1)
    allowed_methods: list[str] | None = None
    allowed_content_types: list[str] | None = None
    body_limit: Size = 13107200
    body_limit_action: Literal["reject", "inspect_partial"] = "reject"
    inspect_response: bool = False
    response_body_limit: Size = 524288
    pcre_match_limit: int = Field(default=100000, ge=1000, le=1_000_000_000)
    exclusions: list[ExclusionConfig] = []
    directives: str = ""

    @field_validator("allowed_methods", "allowed_content_types")
    @classmethod
    def _tokens(cls, values: list[str] | None) -> list[str] | None:
        for value in values or ():
            if not _SAFE.match(value) or "|" in value:
                raise ValueError(f"{value!r} has spaces, quotes, commas or |")
        return values

    @model_validator(mode="after")
    def _levels(self) -> WafConfig:
        if self.detection_paranoia is not None and self.detection_paranoia < self.paranoia:
            raise ValueError("detection_paranoia must be at least paranoia")
        return self


