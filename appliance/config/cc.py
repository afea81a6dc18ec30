"""The ``cc`` section of domains and routes (throttles, bans, bad behaviour) and the top-level
``redis`` key (the CC stage's schema)."""
from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from cc.keys import KeyPart
from cc.store import SENTINEL, parse_sentinel
from limits import parse as parse_limit
from pydantic import Field, field_validator, model_validator

from appliance.config.types import Duration, DurationOrZero, Strict


LEASE = 0.25


class RedisConfig(Strict):
    url: str | None = None  # redis://, rediss:// or unix:// (a password: ${VAR}); none: the node's private server
    timeout: Duration = 0.05
    cluster: bool = False  # url names one node of a Redis Cluster; the others are discovered
    lease: DurationOrZero = LEASE  # how long a worker admits from a reservation (0: none)

    @field_validator("lease")
    @classmethod
    def _lease(cls, value: float) -> float:
        if not 0 <= value <= 5:
            raise ValueError("must be between 0 and 5s (a ban waits this long to be in force everywhere)")
        return value

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith(SENTINEL):
            parse_sentinel(value)
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss://, unix:// or redis+sentinel:// URL")
        return value


def redis_config(value: Any) -> Any:
    """``redis: URL`` is short for ``redis: {url: URL}``."""
    return {"url": value} if isinstance(value, str) else value


class RuleConfig(Strict):
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # default: rule-N
    key: list[str] = ["ip"]  # one part or several: ip, ip_prefix, cookie:NAME, header:NAME, query:NAME, consumer
    fallback_key: list[str] | None = ["ip"]  # when a part of key is missing; null: such requests are not counted
    ipv4_prefix: int = Field(default=24, ge=8, le=32)
    ipv6_prefix: int = Field(default=64, ge=16, le=128)
    limit: str  # 100/minute, 10/second, 1000/hour, 5/10 seconds
    algorithm: Literal["sliding_window", "fixed_window", "gcra"] = "sliding_window"
    burst: int | None = Field(default=None, ge=1)  # gcra only: requests allowed back to back (default: the amount)
    ban_after: int = Field(default=0, ge=0)  # after this many rejected requests, ban the key (0: never)
    ban_for: Duration = 600.0
    ban_window: Duration = 600.0  # the rejected requests count within this time
    on_redis_error: Literal["open", "closed", "local"] = "open"
    action: Literal["reject", "cookie_challenge", "js_challenge"] = "reject"  # what a client over the limit gets

    @field_validator("key", "fallback_key", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("key", "fallback_key")
    @classmethod
    def _parts(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("needs at least one part")
            for part in value:
                KeyPart.parse(part)
        return value

    @field_validator("limit")
    @classmethod
    def _limit(cls, value: str) -> str:
        try:
            item = parse_limit(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a limit such as 100/minute or 10/second ({exc})") from None
        if item.amount < 1:
            raise ValueError(f"{value!r}: the amount must be at least 1")
        return value

    @model_validator(mode="after")
    def _burst(self) -> RuleConfig:
        if self.burst is not None and self.algorithm != "gcra":
            raise ValueError("burst applies to algorithm: gcra only")
        if self.fallback_key and any(p.startswith("consumer") for p in self.fallback_key):
            raise ValueError("fallback_key cannot use consumer (it is the fallback for requests without one)")
        return self


class BadBehaviorConfig(Strict):
    """Ban an address that gets too many error responses (scanners, credential stuffing)."""

    status_codes: list[int] = [400, 401, 403, 404, 405, 429, 444]
    threshold: int = Field(default=30, ge=1)
    window: Duration = 60.0
    ban_for: Duration = 3600.0


class ChallengeConfig(Strict):
    pass_for: Duration = 1800.0  # how long a passed challenge exempts the client from challenge rules
    difficulty: int = Field(default=16, ge=4, le=28)  # leading zero bits of the proof of work (about 2^N hashes)


class CCConfig(Strict):
    rules: list[RuleConfig] = []
    bad_behavior: BadBehaviorConfig | None = None
    challenge: ChallengeConfig = ChallengeConfig()

    @model_validator(mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        """``cc: [rule, ...]`` is short for ``cc: {rules: [rule, ...]}``."""
        return {"rules": value} if isinstance(value, list) else value
