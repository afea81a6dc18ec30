"""Throttles and bans over Redis, one round trip per request, with the behaviour the operator chose
when Redis is unhealthy.

Every rule of a request and every ban that applies to it is decided by one Lua script
(``limit.lua``, EVALSHA), so three rules cost what one does and counts are exact across workers
and nodes. When Redis fails or is slower than the timeout, the limiter is degraded for a second
(no request waits on a Redis that is down) and each rule does what its ``on_redis_error`` says:
``open`` lets the request through, ``closed`` refuses it (503), ``local`` counts in this worker
(``limits``' moving window in memory, the rule's amount shared out between the node's workers).

Leases keep Redis off the path of busy keys. A round trip costs more than the rest of a proxied
request, so a worker that sees many requests of one kind (the same rules, key values and address)
asks the script to count the next ones at once: as many as it saw in the last lease period, and
never more than 1/64 of the room any rule has left. It then admits that many itself until the
lease ends (``redis.lease``, 250 ms by default), with no round trip. Near a limit the script grants
no lease, so every request is decided in Redis and a limit of N still admits exactly N; far from
it, a reservation a worker does not use is lost when its lease ends (the key's count includes it).
A ban made while a lease runs applies to that lease's requests when it ends: the CLI and the admin
API wait that long before they say a ban is in force.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from limits import parse as parse_limit
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from cc.keys import KeyRequest, KeySpec
from cc.resp import Channel, RespError

log = logging.getLogger("edgeward.cc")

SCRIPT = (Path(__file__).parent / "limit.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
ALGORITHMS = {"fixed_window": 1, "sliding_window": 2, "gcra": 3}
PREFIX = "ew"
DEGRADED_FOR = 1.0  # seconds without trying Redis after it failed
MAX_LEASE = 1000  # requests one lease may count
MAX_LEASED_KINDS = 50_000  # kinds of request one worker tracks for leases; more go to Redis one by one


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
    action: Literal["reject", "cookie_challenge", "js_challenge"] = "reject"

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


class _Lease:
    """What a worker knows of one kind of request: reserved counts it may still admit, and how
    many requests of the kind it saw since it last asked (to size the next reservation)."""

    __slots__ = ("tokens", "until", "renew_at", "low", "seen", "since", "created", "asking", "refused", "refused_until")

    def __init__(self, now: float) -> None:
        self.tokens = 0
        self.until = 0.0
        self.low = 0  # ask for the next reservation when this many are left
        self.renew_at = 0.0  # or from this time on
        self.refused: Decision | None = None  # the last refusal, repeated here until a place frees
        self.refused_until = 0.0
        self.seen = 0
        self.since = self.created = now
        self.asking: asyncio.Future[None] | None = None  # a round trip under way for this kind


# Every key about one value (an address, a hashed cookie) carries it as a hash tag, so in a Redis
# Cluster the value's ban and its counters for every rule live in one slot and one script can use
# them together.
def ban_key(value: str) -> str:
    return f"{PREFIX}:{{{value}}}:ban"


def value_of(key: str | bytes) -> str:
    text = key.decode() if isinstance(key, bytes) else key
    return text[text.index("{") + 1:text.rindex("}")]


class Plan:
    """A route's rules encoded once for the script: a request then sends one argument for all
    of them (and one description per rule, used only when it bans)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self._args: dict[tuple[tuple[int, ...], bool], list[str]] = {}

    def args(self, included: tuple[int, ...], address: bool) -> list[str]:
        """The script's arguments for the rules ``included`` (and the address's ban first)."""
        found = self._args.get((included, address))
        if found is None:
            first = 1 if address else 0
            lines = [f"{first + len(included)} {len(included)}"]
            descriptions = []
            for n, i in enumerate(included):
                rule = self.rules[i]
                lines.append(f"{ALGORITHMS[rule.algorithm]} {rule.amount} {int(rule.period * 1000)} {rule.burst} "
                             f"{rule.ban_after} {int(rule.ban_window * 1000)} {int(rule.ban_for * 1000)} {first + n + 1}")
                descriptions.append(json.dumps({"reason": f"over the limit of rule {rule.name} {rule.ban_after} times",
                                                "rule": rule.name, "by": "cc", "ban_for": rule.ban_for}))
            found = self._args[(included, address)] = ["\n".join(lines), *descriptions]
        return found


class Limiter:
    """One per worker process: a Redis pool, the script, the local fallback and the health state."""

    def __init__(self, url: str, timeout: float = 0.05, workers: int = 1, cluster: bool = False,
                 lease: float = 0.0) -> None:
        self.settings = {"url": url, "timeout": timeout, "workers": workers, "cluster": cluster, "lease": lease}
        self.url = url
        self.timeout = timeout
        self.workers = max(1, workers)
        self.cluster = cluster
        self.lease = 0.0 if cluster else lease  # a cluster call covers one value's rules: no leases
        self._lease_ms = str(int(lease * 1000))
        self._leases: dict[tuple[object, ...], _Lease] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": max(timeout, 0.05)}
        self.redis: Any
        self.direct = not cluster and not url.startswith(SENTINEL)  # the request path may use the channel
        if cluster:  # redis-py routes each call to the node of its keys' slot
            self.redis = RedisCluster.from_url(url, **options)
        elif url.startswith(SENTINEL):  # redis-py asks the sentinels where the master is, again after a failover
            sentinels, master, password, db = parse_sentinel(url)
            self.sentinel = Sentinel(sentinels, sentinel_kwargs=options, **options)  # type: ignore[no-untyped-call]
            self.redis = self.sentinel.master_for(master, password=password, db=db, retry=Retry(NoBackoff(), 0), **options)
        else:
            self.redis = aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), max_connections=64, **options)
        self._script = self.redis.register_script(SCRIPT)
        self._channel = Channel(url, timeout)
        self._degraded_until = 0.0
        self.degraded = False
        self.errors = 0
        self._seen: dict[str, float] = {}  # replay digests while Redis fails
        self._memory = MemoryStorage()
        self._moving = MovingWindowRateLimiter(self._memory)
        self._fixed = FixedWindowRateLimiter(self._memory)

    async def close(self) -> None:
        self._channel.close()
        await self.redis.aclose()

    async def _evalsha(self, keys: list[str], args: list[str]) -> Any:
        try:
            return await self._channel.evalsha(SCRIPT_SHA, keys, args)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self._channel.call(b"SCRIPT", b"LOAD", SCRIPT)  # a new or restarted Redis
        return await self._channel.evalsha(SCRIPT_SHA, keys, args)

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

    async def check(self, plan: Plan, address: str | None, values: Sequence[str | None]) -> Decision:
        """Decide one request: ``values`` holds this request's key value for each rule of
        ``plan`` (None: the rule does not count it); ``address``, when given, is the client
        address whose ban applies too."""
        if not self.lease or (address is None and all(v is None for v in values)):
            return await self._check(plan, address, values, 1)
        if self.admit(plan, address, values):
            return ALLOW
        kind = (plan, address, *values)
        lease = self._leases.get(kind)
        now = time.monotonic()
        if lease is None:
            if len(self._leases) >= MAX_LEASED_KINDS and not self._forget(now):
                return await self._check(plan, address, values, 1)
            lease = self._leases[kind] = _Lease(now)
        lease.seen += 1
        if lease.asking is not None and not (lease.tokens > 0 and now < lease.until):
            await asyncio.shield(lease.asking)  # the reservation another request of the kind asked for
            now = time.monotonic()
        if lease.tokens > 0 and now < lease.until:  # the reservation waited for came
            lease.tokens -= 1
            return ALLOW
        refused = lease.refused
        if refused is not None and now < lease.refused_until:
            return Decision("limited", refused.rule, refused.retry_after - (now - lease.since))
        # as many as came in the last period, scaled to a lease; one for a kind seen the first time
        want = 1 if lease.seen == 1 and lease.since == lease.created else self._want(lease, now)
        asking = lease.asking = asyncio.get_running_loop().create_future()
        try:
            decision = await self._check(plan, address, values, want, lease)
        finally:
            if lease.asking is asking:
                lease.asking = None
            asking.set_result(None)
        # No place frees before the retry time (counts only grow until then), so refusing this
        # kind here until then is what Redis would answer. Not for rules that ban: each refusal
        # counts towards the ban, in Redis.
        if decision.kind == "limited" and decision.rule is not None and not decision.rule.ban_after:
            lease.refused, lease.refused_until = decision, now + min(decision.retry_after, self.lease)
        else:
            lease.refused = None
        return decision

    def admit(self, plan: Plan, address: str | None, values: Sequence[str | None]) -> bool:
        """True when a running lease admits this request: no round trip and nothing to await,
        so the CC stage answers most requests of a busy kind without suspending."""
        lease = self._leases.get((plan, address, *values)) if self.lease else None
        if lease is None or lease.tokens <= 0:
            return False
        now = time.monotonic()
        if now >= lease.until:
            return False
        lease.seen += 1
        lease.tokens -= 1
        if (lease.tokens <= lease.low or now >= lease.renew_at) and lease.asking is None:
            self._top_up(plan, address, values, lease, now)
        return True

    def _want(self, lease: _Lease, now: float, have: int = 0) -> int:
        """As many as came since the last reservation, scaled to a lease (less those in hand)."""
        want = min(MAX_LEASE, math.ceil(lease.seen * self.lease / max(now - lease.since, 0.001)))
        lease.seen, lease.since = 0, now
        return max(1, want - have)

    def _top_up(self, plan: Plan, address: str | None, values: Sequence[str | None], lease: _Lease,
                now: float) -> None:
        """Ask for the next reservation halfway through this one (or with a quarter of its
        counts left), in a task: without it, every request of a busy kind waits for that round
        trip when the lease runs out."""
        loop = asyncio.get_running_loop()
        asking = lease.asking = loop.create_future()

        async def ask() -> None:
            try:
                decision = ALLOW
                if time.monotonic() < self._degraded_until:
                    decision = Decision("unavailable")
                else:
                    decision = await self._check(plan, address, values, self._want(lease, now, lease.tokens), lease,
                                                 ahead=True)
                if decision.kind != "allow":  # no more asking ahead: the requests ask when this one ends
                    lease.low, lease.renew_at = -1, lease.until
            finally:
                if lease.asking is asking:
                    lease.asking = None
                asking.set_result(None)

        task = loop.create_task(ask())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, now: float) -> bool:
        """Drop the kinds with no lease running; True when that made room."""
        self._leases = {k: v for k, v in self._leases.items() if v.until > now or v.asking is not None}
        return len(self._leases) < MAX_LEASED_KINDS

    async def _check(self, plan: Plan, address: str | None, values: Sequence[str | None], want: int,
                     lease: _Lease | None = None, ahead: bool = False) -> Decision:
        """``ahead``: a reservation asked for before any request needs it (every count granted
        goes to the lease; a refusal counts towards no ban; a failure falls back to nothing)."""
        included = tuple(i for i, v in enumerate(values) if v is not None)
        if not included and address is None:
            return ALLOW
        if time.monotonic() < self._degraded_until:
            return await self._fallback([(plan.rules[i], values[i]) for i in included])  # type: ignore[misc]
        try:
            if self.cluster:
                decision = await self._decide_grouped(plan, address, values, included)
            else:
                decision, granted, lease_ms = await self._decide(plan, address, values, included, want, ahead)
                if not ahead:
                    granted -= 1  # this request's own
                if lease is not None and granted > 0 and lease_ms > 0:  # added to a reservation still running
                    now = time.monotonic()
                    lease.tokens = granted + (lease.tokens if now < lease.until else 0)
                    lease.until = now + lease_ms / 1000
                    lease.renew_at = now + lease_ms / 2000
                    lease.low = granted // 4
        except (RespError, RedisError, OSError) as exc:
            self._failed(exc)
            if ahead:
                return ALLOW
            return await self._fallback([(plan.rules[i], values[i]) for i in included])  # type: ignore[misc]
        if self.degraded:
            self._recovered()
        return decision

    async def _decide(self, plan: Plan, address: str | None, values: Sequence[str | None],
                      included: tuple[int, ...], want: int = 1, ahead: bool = False) -> tuple[Decision, int, int]:
        """One script call for the whole request: the decision, and the requests counted with it
        (this one and the lease's) and how long the lease runs (ms)."""
        args = plan.args(included, address is not None)
        if want > 1 or ahead:
            args = [*args, str(want), self._lease_ms, "1" if ahead else "0"]
        keys = [ban_key(address)] if address is not None else []
        keys += [ban_key(values[i]) for i in included]  # type: ignore[arg-type]
        for i in included:
            rule_id = plan.rules[i].rule_id
            keys += [f"{PREFIX}:{{{values[i]}}}:rl:{rule_id}", f"{PREFIX}:{{{values[i]}}}:rx:{rule_id}"]
        if self.direct:
            result = await self._evalsha(keys, args)
        else:
            result = await self._script(keys=keys, args=args)
        code = int(result[0])
        if code == 0:
            return ALLOW, int(result[1]), int(result[2])
        if code == 2:
            ttl = int(result[2])
            return Decision("banned", None, ttl / 1000 if ttl > 0 else 0.0, value_of(keys[int(result[1]) - 1])), 0, 0
        index = included[int(result[1]) - 1]
        rule = plan.rules[index]
        if code == 3:
            return Decision("banned", rule, int(result[2]) / 1000, values[index] or ""), 0, 0
        return Decision("limited", rule, int(result[2]) / 1000), 0, 0

    async def _decide_grouped(self, plan: Plan, address: str | None, values: Sequence[str | None],
                              included: tuple[int, ...]) -> Decision:
        """Cluster: one script call per key value (each value's keys share a slot), in parallel.
        A request admitted by one group and refused by another has been counted by the first:
        the "a refused request counts against no rule" guarantee holds per value here."""
        groups: dict[str | None, list[int]] = {}
        if address is not None:
            groups[address] = []
        for i in included:
            groups.setdefault(values[i], []).append(i)
        results = await asyncio.gather(*(
            self._decide(plan, value if value == address else None, values, tuple(indexes))
            for value, indexes in groups.items()))
        for kind in ("banned", "limited"):
            for decision, _, _ in results:
                if decision.kind == kind:
                    return decision
        return ALLOW

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

    async def remember(self, digest: str, seconds: float) -> bool:
        """True the first time ``digest`` is seen within ``seconds`` by any worker or node (HMAC
        replay protection). While Redis fails, this worker's own memory answers."""
        if time.monotonic() >= self._degraded_until:
            try:
                return bool(await self.redis.set(f"{PREFIX}:{{seen}}:{digest}", b"1", nx=True, px=int(seconds * 1000)))
            except (RedisError, OSError) as exc:
                self._failed(exc)
        now = time.monotonic()
        if len(self._seen) > 100_000:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
        if self._seen.get(digest, 0.0) > now:
            return False
        self._seen[digest] = now + seconds
        return True

    # -- bans, for the CLI, the admin API and the bad-behaviour counter ------------------------------

    async def ban(self, value: str, seconds: float, reason: str, by: str) -> None:
        record = json.dumps({"reason": reason, "rule": None, "since": time.time(), "by": by})
        await self.redis.set(ban_key(value), record, px=int(seconds * 1000) if seconds > 0 else None)
        await asyncio.sleep(self.lease)  # every lease granted before the ban has ended

    async def unban(self, value: str) -> bool:
        return bool(await self.redis.delete(ban_key(value)))

    async def bans(self) -> list[dict[str, Any]]:
        out = []
        async for key in self.redis.scan_iter(match=f"{PREFIX}:{{*}}:ban", count=500):
            raw, ttl = await self.redis.get(key), await self.redis.pttl(key)
            if raw is None:
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = {}
            entry["key"] = value_of(key)
            entry["expires_in"] = ttl / 1000 if ttl > 0 else None
            if "since" not in entry and entry.get("ban_for") and ttl > 0:
                entry["since"] = time.time() - (entry["ban_for"] - ttl / 1000)
            out.append(entry)
        return sorted(out, key=lambda e: str(e.get("key")))

    async def bad_response(self, ip: str, window: float, threshold: int, ban_for: float) -> bool:
        """Count one bad response of ``ip``; ban it when ``threshold`` are reached within
        ``window`` seconds. True when this one banned it."""
        if time.monotonic() < self._degraded_until:
            return False
        key = f"{PREFIX}:{{{ip}}}:bb"
        try:
            count = await self.redis.incr(key)
            if int(count) == 1:
                await self.redis.pexpire(key, int(window * 1000))
            if int(count) >= threshold:
                await self.ban(ip, ban_for, f"{count} bad responses within {window:g} s", "bad_behavior")
                await self.redis.delete(key)
                return True
        except (RedisError, OSError) as exc:
            self._failed(exc)
        return False


SENTINEL = "redis+sentinel://"


def parse_sentinel(url: str) -> tuple[list[tuple[str, int]], str, str | None, int]:
    """``redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]``: (sentinels, master
    name, the master's password, database)."""
    rest = url[len(SENTINEL):]
    hosts, _, path = rest.partition("/")
    password = None
    if "@" in hosts:
        credentials, hosts = hosts.rsplit("@", 1)
        password = unquote(credentials.partition(":")[2]) or None
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"{host!r} is not HOST:PORT of a sentinel")
        sentinels.append((name.strip("[]"), int(port)))
    master, _, db = path.partition("/")
    if not master:
        raise ValueError("the master's name is missing (redis+sentinel://HOST:PORT/MASTER)")
    if db and not db.isdigit():
        raise ValueError(f"{db!r} is not a database number")
    return sentinels, master, password, int(db or 0)


def _safe(url: str) -> str:
    """A Redis URL without its password, for logs."""
    if url.startswith(SENTINEL) and "@" in url:
        return SENTINEL + ":***@" + url.rsplit("@", 1)[1]
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{parts.hostname}"
                                     + (f":{parts.port}" if parts.port else "")))
