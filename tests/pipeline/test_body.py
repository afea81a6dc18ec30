"""Reading the request body (tests/pipeline/test_body.py for appliance/pipeline/body.py): small
bodies stay in memory, large ones go to a spool file that holds exactly the bytes received."""
from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from appliance.pipeline.body import SPOOL_OVER, ClientGone, read_body
from appliance.pipeline.context import RequestContext


def _ctx(chunks: list[bytes], disconnect: bool = False) -> RequestContext:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1 or disconnect} for i, c in enumerate(chunks)]
    if disconnect:
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    rx: Callable[[], Awaitable[dict[str, Any]]] = receive
    return RequestContext({"type": "http", "headers": []}, rx, False, time.perf_counter(), request_id="r1")


async def test_a_small_body_stays_in_memory() -> None:
    ctx = _ctx([b"a=1", b"&b=2"])
    await read_body(ctx, 1 << 20)
    assert ctx.body == b"a=1&b=2" and ctx.spool is None and ctx.body_complete and ctx.body_length == 7


async def test_a_large_body_is_spooled_byte_for_byte_and_leaves_no_file() -> None:
    chunks = [os.urandom(256 * 1024) for _ in range(6)]  # 1.5 MiB
    ctx = _ctx(chunks)
    await read_body(ctx, 10 << 20)
    assert ctx.spool is not None and ctx.body == b"" and ctx.body_complete
    assert ctx.body_length == sum(map(len, chunks)) > SPOOL_OVER
    assert ctx.spool.path.read_bytes() == b"".join(chunks)  # what the engine reads
    assert b"".join([c async for c in ctx.spool.chunks()]) == b"".join(chunks)  # what the proxy forwards
    assert "(deleted)" in os.readlink(ctx.spool.path)  # unlinked from the start: nothing left behind
    ctx.spool.close()


async def test_reading_stops_at_want_even_when_spooling() -> None:
    chunks = [b"x" * (512 * 1024)] * 8
    ctx = _ctx(chunks)
    await read_body(ctx, 2 * 1024 * 1024 + 1)
    assert ctx.spool is not None and not ctx.body_complete
    assert 2 * 1024 * 1024 < ctx.body_length < 4 * 1024 * 1024
    ctx.spool.close()


async def test_a_client_that_leaves_mid_body_is_reported() -> None:
    with pytest.raises(ClientGone):
        await read_body(_ctx([b"x" * (2 << 20)], disconnect=True), 10 << 20)
