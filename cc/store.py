"""Throttles and bans over Redis, one round trip per request, with the behaviour the operator chose
when Redis is unhealthy.

Every rule of a request and every ban that applies to it is decided by one Lua script
(``limit.lua``, EVALSHA), so three rules cost what one does and counts are exact across workers
and nodes. When Redis fails or is slower than the timeout, the limiter is degraded for a second
(no request waits on a Redis that is down) and each rule does what its ``on_redis_error`` says:
``open`` lets the request through, ``closed`` refuses it (503), ``local`` counts in this worker
(``limits``' moving window in memory, the rule's amount shared out between the node's workers).
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import redis.asyncio as aioredis
from limits import parse as parse_limit
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from cc.keys import KeyRequest, KeySpec

log = logging.getLogger("edgeward.cc")

SCRIPT = (Path(__file__).parent / "limit.lua").read_text()
ALGORITHMS = {"fixed_window": 1, "sliding_window": 2, "gcra": 3}
PREFIX = "ew"
DEGRADED_FOR = 1.0  # seconds without trying Redis after it failed


@dataclass(frozen=True, slots=True)
class Rule:
    """One throttle: ``amount`` requests per ``period`` seconds for each value of ``key``."""

    name: str
    rule_id: str  # stable and short: part of the Redis key names
    key: KeySpec
    fallback: KeySpec | None  # used when a part of ``key`` is missing; None: such requests are not counted
    algorithm: str
    amount: int
    period: float
    burst: int
    ban_after: int = 0
    ban_for: float = 0.0
    ban_window: float = 600.0
    on_redis_error: Literal["open", "closed", "local"] = "open"

    def value(self, request: KeyRequest) -> str | None:
        found = self.key.value(request)
        if found is None and self.fallback is not None:
            found = self.fallback.value(request)
        return found


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Literal["allow", "limited", "banned", "unavailable"]
    rule: Rule | None = None
    retry_after: float = 0.0  # seconds; 0 when unknown (a ban without expiry)
    ban: str = ""  # the banned key


ALLOW = Decision("allow")


def ban_key(value: str) -> str:
    return f"{PREFIX}:ban:{value}"


class Limiter:
    """One per worker process: a Redis pool, the script, the local fallback and the health state."""

    def __init__(self, url: str, timeout: float = 0.05, workers: int = 1) -> None:
        self.url = url
        self.timeout = timeout
        self.workers = max(1, workers)
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=max(timeout, 0.05), retry=Retry(NoBackoff(), 0),
            max_connections=64)
        self._script = self.redis.register_script(SCRIPT)
        self._degraded_until = 0.0
        self.degraded = False
        self.errors = 0
        self._memory = MemoryStorage()
        self._moving = MovingWindowRateLimiter(self._memory)
        self._fixed = FixedWindowRateLimiter(self._memory)

    async def close(self) -> None:
        await self.redis.aclose()

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self._degraded_until = time.monotonic() + DEGRADED_FOR
        if not self.degraded:
            self.degraded = True
            log.warning("cc: Redis at %s failed (%s: %s); degraded: each rule's on_redis_error applies",
                        _safe(self.url), type(exc).__name__, exc)

    def _recovered(self) -> None:
        if self.degraded:
            self.degraded = False
            log.warning("cc: Redis at %s answers again; no longer degraded", _safe(self.url))

    async def check(self, rules: Sequence[tuple[Rule, str]], bans: Sequence[str]) -> Decision:
        """Decide one request: ``rules`` with this request's key value each, ``bans`` the key
        values whose bans apply besides each rule's own value (the client's address)."""
        if time.monotonic() < self._degraded_until:
            return await self._fallback(rules)
        bans = list(dict.fromkeys([*bans, *(value for _, value in rules)]))  # a rule's value can be banned too
        keys = [ban_key(b) for b in bans]
        args: list[Any] = [len(bans), len(rules)]
        for rule, value in rules:
            keys += [f"{PREFIX}:rl:{rule.rule_id}:{value}", f"{PREFIX}:rx:{rule.rule_id}:{value}"]
            description = json.dumps({"key": value, "reason": f"over the limit of rule {rule.name} "
                                       f"{rule.ban_after} times", "rule": rule.name, "since": time.time(), "by": "cc"})
            args += [ALGORITHMS[rule.algorithm], rule.amount, int(rule.period * 1000), rule.burst, rule.ban_after,
                     int(rule.ban_window * 1000), int(rule.ban_for * 1000), bans.index(value) + 1, description]
        try:
            result = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return await self._fallback(rules)
        self._recovered()
        code = int(result[0])
        if code == 0:
            return ALLOW
        if code == 2:
            ttl = int(result[2])
            return Decision("banned", None, ttl / 1000 if ttl > 0 else 0.0, bans[int(result[1]) - 1])
        rule = rules[int(result[1]) - 1][0]
        if code == 3:
            return Decision("banned", rule, int(result[2]) / 1000, rules[int(result[1]) - 1][1])
        return Decision("limited", rule, int(result[2]) / 1000)

    async def _fallback(self, rules: Sequence[tuple[Rule, str]]) -> Decision:
        for rule, value in rules:
            if rule.on_redis_error == "closed":
                return Decision("unavailable", rule, DEGRADED_FOR)
            if rule.on_redis_error == "local":
                amount = max(1, math.ceil(rule.amount / self.workers))
                item = parse_limit(f"{amount}/{max(1, round(rule.period))} second")
                strategy = self._fixed if rule.algorithm == "fixed_window" else self._moving
                if not await strategy.hit(item, rule.rule_id, value):
                    stats = await strategy.get_window_stats(item, rule.rule_id, value)
                    return Decision("limited", rule, max(0.0, stats.reset_time - time.time()))
        return ALLOW

    # -- bans, for the CLI, the admin API and the bad-behaviour counter ------------------------------

    async def ban(self, value: str, seconds: float, reason: str, by: str) -> None:
        record = json.dumps({"key": value, "reason": reason, "rule": None, "since": time.time(), "by": by})
        await self.redis.set(ban_key(value), record, px=int(seconds * 1000) if seconds > 0 else None)

    async def unban(self, value: str) -> bool:
        return bool(await self.redis.delete(ban_key(value)))

    async def bans(self) -> list[dict[str, Any]]:
        out = []
        async for key in self.redis.scan_iter(match=f"{PREFIX}:ban:*", count=500):
            raw, ttl = await self.redis.get(key), await self.redis.pttl(key)
            if raw is None:
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = {"key": key.decode()[len(PREFIX) + 5:]}
            entry["expires_in"] = ttl / 1000 if ttl > 0 else None
            out.append(entry)
        return sorted(out, key=lambda e: str(e.get("key")))

    async def bad_response(self, ip: str, window: float, threshold: int, ban_for: float) -> bool:
        """Count one bad response of ``ip``; ban it when ``threshold`` are reached within
        ``window`` seconds. True when this one banned it."""
        if time.monotonic() < self._degraded_until:
            return False
        key = f"{PREFIX}:bb:{ip}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, int(window * 1000), nx=True)
                count = (await pipe.execute())[0]
            if int(count) >= threshold:
                await self.ban(ip, ban_for, f"{count} bad responses within {window:g} s", "bad_behavior")
                await self.redis.delete(key)
                return True
        except (RedisError, OSError) as exc:
            self._failed(exc)
        return False


def _safe(url: str) -> str:
    """A Redis URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{parts.hostname}"
                                     + (f":{parts.port}" if parts.port else "")))
