"""Leases (cc/store.py): a busy kind of request is counted in Redis in reservations, never past a
limit, and exactly one by one near it. Against a real redis-server; each Limiter stands for one
worker (its own connection and leases)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
import redis.asyncio

from cc.keys import KeyPart, KeySpec
from cc.store import SCRIPT, Limiter, Plan, Rule


def rule(limit: int, algorithm: str = "sliding_window", period: float = 86400.0, name: str = "r") -> Rule:
    return Rule(name=name, rule_id=name, key=KeySpec((KeyPart.parse("ip"),)), fallback=None, algorithm=algorithm,
                amount=limit, period=period, burst=limit)


def evalsha_calls(url: str) -> int:
    """EVALSHA calls the server has run (the script loaded first, so none is a NOSCRIPT retry)."""
    redis.Redis.from_url(url).script_load(SCRIPT)
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def flood(limiters: list[Limiter], plan: Plan, count: int, address: str = "192.0.2.1") -> int:
    """``count`` checks of one kind spread over the limiters, 16 at a time in each; the admitted."""
    async def worker(limiter: Limiter, share: int) -> int:
        admitted = 0

        async def one() -> None:
            nonlocal admitted
            decision = await limiter.check(plan, address, [address] * len(plan.rules))
            admitted += decision.kind == "allow"

        for start in range(0, share, 16):
            await asyncio.gather(*(one() for _ in range(min(16, share - start))))
        return admitted

    shares = [count // len(limiters)] * len(limiters)
    return sum(await asyncio.gather(*(worker(limiter, share) for limiter, share in zip(limiters, shares))))


def run(url: str, workers: int, lease: float, body: Any) -> Any:
    async def main() -> Any:
        limiters = [Limiter(url, timeout=1.0, lease=lease) for _ in range(workers)]
        try:
            return await body(limiters)
        finally:
            for limiter in limiters:
                await limiter.close()

    return asyncio.run(main())


@pytest.mark.parametrize("algorithm", ["sliding_window", "fixed_window", "gcra"])
def test_a_busy_kind_is_counted_in_reservations_and_never_past_the_limit(redis_server: Any, algorithm: str) -> None:
    plan = Plan([rule(6400, algorithm)])
    before = evalsha_calls(redis_server.url)
    admitted = run(redis_server.url, 4, 0.25, lambda limiters: flood(limiters, plan, 10_000))
    calls = evalsha_calls(redis_server.url) - before
    # reservations never take more than 1/64 of the room left, so the 4 workers hold few unused
    # ones when the flood ends; none is admitted past the limit
    assert 6400 - 4 * 100 <= admitted <= 6400
    assert calls < 10_000 / 4, f"{calls} round trips for 10,000 requests"


def test_near_the_limit_every_request_is_decided_in_redis_and_the_count_is_exact(redis_server: Any) -> None:
    plan = Plan([rule(100), rule(1000, "gcra", name="g"), rule(5000, "fixed_window", name="f")])
    admitted = run(redis_server.url, 4, 0.25, lambda limiters: flood(limiters, plan, 1000))
    assert admitted == 100
    store = redis.Redis.from_url(redis_server.url)
    assert store.llen("ew:{192.0.2.1}:rl:r") == 100 and store.get("ew:{192.0.2.1}:rl:f") == b"100"


def test_a_refused_kind_is_refused_in_the_worker_until_a_place_frees_unless_its_rule_bans(redis_server: Any) -> None:
    quiet = Plan([rule(3, period=1.0)])
    banning = Plan([Rule(name="b", rule_id="b", key=KeySpec((KeyPart.parse("ip"),)), fallback=None, algorithm="sliding_window",
                         amount=3, period=1.0, burst=3, ban_after=1000)])

    async def body(limiters: list[Limiter]) -> None:
        (worker,) = limiters
        for plan, address in ((quiet, "192.0.2.1"), (banning, "192.0.2.2")):
            decisions = [await worker.check(plan, address, [address]) for _ in range(3)]
            assert [d.kind for d in decisions] == ["allow"] * 3
            before = evalsha_calls(redis_server.url)
            refused = [await worker.check(plan, address, [address]) for _ in range(20)]
            assert {d.kind for d in refused} == {"limited"} and all(0 < d.retry_after <= 1 for d in refused)
            calls = evalsha_calls(redis_server.url) - before
            assert calls == (1 if plan is quiet else 20)
        # a place frees after the window: the worker asks Redis again and is admitted
        deadline = time.monotonic() + 3
        while (await worker.check(quiet, "192.0.2.1", ["192.0.2.1"])).kind != "allow":
            assert time.monotonic() < deadline, "never admitted again"
            await asyncio.sleep(0.05)

    run(redis_server.url, 1, 0.25, body)


def test_without_leases_every_request_costs_one_round_trip(redis_server: Any) -> None:
    plan = Plan([rule(100_000)])
    before = evalsha_calls(redis_server.url)
    assert run(redis_server.url, 2, 0.0, lambda limiters: flood(limiters, plan, 2000)) == 2000
    assert evalsha_calls(redis_server.url) - before == 2000


def test_a_ban_is_in_force_when_ban_returns_even_for_a_worker_holding_a_lease(redis_server: Any) -> None:
    plan = Plan([rule(100_000)])

    async def body(limiters: list[Limiter]) -> None:
        worker, operator = limiters
        assert await flood([worker], plan, 500) == 500
        before = evalsha_calls(redis_server.url)
        assert (await worker.check(plan, "192.0.2.1", ["192.0.2.1"])).kind == "allow"
        assert evalsha_calls(redis_server.url) == before  # admitted from the lease
        await operator.ban("192.0.2.1", 60, "test", "test")
        decision = await worker.check(plan, "192.0.2.1", ["192.0.2.1"])
        assert (decision.kind, decision.ban) == ("banned", "192.0.2.1")

    run(redis_server.url, 2, 2.0, body)  # a long lease: the check after the flood finds it running


def test_kinds_are_leased_apart(redis_server: Any) -> None:
    """A reservation for one address admits nobody else (another address, the same rules)."""
    plan = Plan([rule(100_000, "fixed_window")])

    async def body(limiters: list[Limiter]) -> None:
        (worker,) = limiters
        assert await flood([worker], plan, 500, "192.0.2.1") == 500
        before = evalsha_calls(redis_server.url)
        assert (await worker.check(plan, "192.0.2.2", ["192.0.2.2"])).kind == "allow"
        assert evalsha_calls(redis_server.url) == before + 1
        counted = redis.Redis.from_url(redis_server.url).get("ew:{192.0.2.2}:rl:r")
        assert counted == b"1"

    run(redis_server.url, 1, 0.25, body)


def test_a_kind_asked_about_one_request_at_a_time_still_gets_leases(redis_server: Any) -> None:
    """The first request of a kind asks for itself only; the next ones, coming fast, for a lease
    (one by one, never two at once, as a keep-alive client's requests come)."""
    plan = Plan([rule(100_000)])

    async def body(limiters: list[Limiter]) -> int:
        (worker,) = limiters
        return sum([(await worker.check(plan, "192.0.2.1", ["192.0.2.1"])).kind == "allow" for _ in range(500)])

    before = evalsha_calls(redis_server.url)
    assert run(redis_server.url, 1, 0.25, body) == 500
    assert evalsha_calls(redis_server.url) - before < 10


def test_the_next_reservation_is_asked_for_before_this_one_runs_out(redis_server: Any) -> None:
    """Requests of a busy kind never wait for Redis when a lease runs out: the next one is asked
    for while a quarter is left (about 60 ms of requests here). Redis is paused (CLIENT PAUSE WRITE
    holds every script) for 40 ms out of every 150; a request that had to ask it then would wait up
    to 40 ms, and about 12 leases run out in the 3 seconds."""
    plan = Plan([rule(10_000_000)])

    async def body(limiters: list[Limiter]) -> list[float]:
        (worker,) = limiters
        for _ in range(300):  # a steady kind, about 500 a second: leases of about 125
            assert (await worker.check(plan, "192.0.2.1", ["192.0.2.1"])).kind == "allow"
            await asyncio.sleep(0.002)
        pauser = redis.asyncio.Redis.from_url(redis_server.url)
        waits: list[float] = []

        async def pause() -> None:
            while True:
                await pauser.execute_command("CLIENT", "PAUSE", "40", "WRITE")
                await asyncio.sleep(0.15)

        pausing = asyncio.ensure_future(pause())
        try:
            end = time.monotonic() + 3
            while time.monotonic() < end:
                started = time.perf_counter()
                assert (await worker.check(plan, "192.0.2.1", ["192.0.2.1"])).kind == "allow"
                waits.append(time.perf_counter() - started)
                await asyncio.sleep(0.002)
        finally:
            pausing.cancel()
            await pauser.execute_command("CLIENT", "UNPAUSE")
            await pauser.aclose()
        return waits

    waits = run(redis_server.url, 1, 0.25, body)
    assert len(waits) > 500 and max(waits) < 0.015, f"a request waited {max(waits) * 1000:.0f} ms"
