"""1 GiB each way through the appliance with flat memory, and WebSockets both ways."""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import httpx
import pytest
import websockets

from ..harness import Appliance, Upstream, start_appliance, stop

GIB = 1 << 30
RSS_GROWTH_LIMIT_KIB = 96 * 1024


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream) -> Iterator[Appliance]:
    tmp = tmp_path_factory.mktemp("stream")
    appliance = start_appliance(tmp, f"  - hosts: [app.example.test]\n    upstream: {upstream_a.url}\n")
    yield appliance
    stop(appliance.proc)


def test_1gib_download_streams_with_flat_memory(app: Appliance) -> None:
    httpx.get(app.url + "/bytes/1000", headers={"Host": "app.example.test"})  # warm both workers' pools
    before = app.rss_kib()
    peak = before
    received = 0
    with httpx.stream("GET", app.url + f"/bytes/{GIB}", headers={"Host": "app.example.test"}, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-length"] == str(GIB)
        for i, chunk in enumerate(resp.iter_raw(1 << 20)):
            received += len(chunk)
            if i % 128 == 0:
                peak = max(peak, app.rss_kib())
    assert received == GIB
    assert peak - before < RSS_GROWTH_LIMIT_KIB, f"RSS grew {(peak - before) // 1024} MiB"


def test_1gib_upload_streams_with_flat_memory(app: Appliance) -> None:
    before = app.rss_kib()
    peak = [before]
    chunk = b"\xab" * (1 << 20)
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for i in range(1024):
            digest.update(chunk)
            if i % 128 == 0:
                peak[0] = max(peak[0], app.rss_kib())
            yield chunk

    resp = httpx.put(app.url + "/upload", content=body(), headers={"Host": "app.example.test"}, timeout=60)
    assert resp.status_code == 200
    assert resp.json()["body_bytes"] == GIB
    assert resp.json()["body_sha256"] == digest.hexdigest()
    assert peak[0] - before < RSS_GROWTH_LIMIT_KIB, f"RSS grew {(peak[0] - before) // 1024} MiB"


def test_websocket_proxied_both_ways(app: Appliance) -> None:
    async def talk() -> None:
        async with websockets.connect(
            "ws://app.example.test/ws", host="127.0.0.1", port=app.port, proxy=None,
            subprotocols=["superchat"],  # type: ignore[list-item]
        ) as ws:
            assert ws.subprotocol == "superchat"
            greeting = await ws.recv()
            assert greeting == "hello from A via 127.0.0.1"
            await ws.send("ping")
            assert await ws.recv() == "echo:ping"
            await ws.send(b"\x01\x02\x03")
            assert await ws.recv() == b"\x03\x02\x01"
            for i in range(50):
                await ws.send(f"m{i}")
            assert [await ws.recv() for _ in range(50)] == [f"echo:m{i}" for i in range(50)]

    asyncio.run(talk())


def test_websocket_to_unknown_host_is_refused(app: Appliance) -> None:
    async def talk() -> None:
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            async with websockets.connect("ws://nope.test/ws",
                                          host="127.0.0.1", port=app.port, proxy=None):
                pass
        assert info.value.response.status_code == 421  # as for plain HTTP, with the request id
        assert info.value.response.headers.get("x-request-id")

    asyncio.run(talk())


def test_client_leaving_mid_download_stops_the_upstream_transfer(app: Appliance) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", app.port)) as s:
        s.sendall(b"GET /bytes/200000000 HTTP/1.1\r\nHost: app.example.test\r\nX-Request-Id: x\r\n\r\n")
        head = s.recv(65536)
        rid = next(line.split(b": ")[1].decode() for line in head.split(b"\r\n") if line.lower().startswith(b"x-request-id"))
    record = app.access_record(rid, timeout=5)
    assert record["bytes"] < 200_000_000 // 2, record  # not the whole response pulled into the void
    assert (record["status"], record["reason"]) == (200, "client_gone")
