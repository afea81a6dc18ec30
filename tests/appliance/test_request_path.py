"""The request path's bugs of issue P4, each with the behaviour that was wrong, through a real
appliance process, real upstreams and real sockets."""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets

from ..harness import Appliance, Upstream, raw_request, start_appliance, stop


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream, upstream_b: Upstream) -> Iterator[Appliance]:
    tmp = tmp_path_factory.mktemp("request-path")
    domains = f"""\
  - hosts: [app.example.test]
    upstream: {upstream_a.url}
    routes:
      - path: /admin
        upstream: {upstream_b.url}
      - path: /search
        upstream: {upstream_b.url}
      - path: /think
        timeouts: {{read: 10s}}
      - path: /slow-body
        timeouts: {{read: 1s}}
      - path: /limited
        max_body_size: 1k
  - hosts: [base.test]
    upstream: {upstream_a.url}/base
  - hosts: ["*"]
    upstream: {upstream_b.url}
"""
    appliance = start_appliance(tmp, domains)
    yield appliance
    stop(appliance.proc)


def get(app: Appliance, path: str, host: str = "app.example.test", **kw: object) -> httpx.Response:
    headers = {"Host": host, **kw.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(kw.pop("method", "GET"), app.url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def raw_get(app: Appliance, target: str, host: str = "app.example.test", extra: str = "") -> bytes:
    return raw_request(app.port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())


@pytest.mark.parametrize("target", [
    "/admin", "/x/../admin", "//admin", "/./admin", "/static/%2e%2e/admin", "/static/%2E%2E/admin/x",
    "/%61dmin", "///admin//x", "/static/..%2fadmin",
])
def test_routes_match_the_normalised_path(app: Appliance, target: str) -> None:
    """Every spelling of /admin reaches the /admin route (upstream B), never the default one (A)."""
    response = raw_get(app, target)
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    assert b'"server": "B"' in response


@pytest.mark.parametrize("target", ["/..", "/%2e%2e/x", "/a/../../x", "/a/%2e%2e/%2E%2E/etc/passwd"])
def test_paths_that_climb_above_the_root_are_refused(app: Appliance, upstream_a: Upstream, target: str) -> None:
    response = raw_get(app, target, host="base.test")
    assert response.startswith(b"HTTP/1.1 400"), response[:200]
    assert b"x-request-id:" in response.lower()
    assert not any(target in line for line in upstream_a.seen())


def test_forwarded_target_stays_below_the_upstream_base_path(app: Appliance) -> None:
    response = raw_get(app, "/a/%2e%2e/b", host="base.test")
    assert b'"path": "/base/a/%2e%2e/b"' in response  # the raw target, below /base


def test_two_host_headers_are_refused(app: Appliance, upstream_a: Upstream, upstream_b: Upstream) -> None:
    response = raw_request(app.port, b"GET /two-hosts HTTP/1.1\r\nHost: app.example.test\r\nHost: other.test\r\n"
                                     b"Connection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400"), response[:200]
    assert not any("/two-hosts" in line for line in upstream_a.seen() + upstream_b.seen())


def test_connect_is_refused_with_405(app: Appliance, upstream_b: Upstream) -> None:
    response = raw_request(app.port, b"CONNECT app.example.test:443 HTTP/1.1\r\nHost: app.example.test:443\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 405"), response[:200]
    assert b"x-request-id:" in response.lower()
    assert not any(line.startswith("CONNECT") for line in upstream_b.seen())


def test_catch_all_domain_takes_any_host(app: Appliance) -> None:
    for host in ("127.0.0.1", "unknown.example", "[::1]"):
        response = get(app, "/catch", host=host)
        assert response.status_code == 200 and response.json()["server"] == "B", host


def test_forwarded_and_real_ip_from_an_untrusted_peer_are_replaced(app: Appliance) -> None:
    data = get(app, "/h", headers={"Forwarded": "for=1.2.3.4", "X-Real-IP": "1.2.3.4"}).json()
    headers = {k.lower(): v for k, v in data["headers"]}
    assert headers["x-real-ip"] == "127.0.0.1"
    assert "1.2.3.4" not in headers["forwarded"] and headers["forwarded"].startswith("for=127.0.0.1")


def test_response_headers_named_in_connection_are_dropped_and_request_id_is_ours(app: Appliance) -> None:
    response = get(app, "/own-headers")
    assert response.headers["x-kept"] == "yes"
    assert "x-private" not in response.headers
    assert response.headers.get_list("x-request-id") != ["from-upstream"]
    assert len(response.headers.get_list("x-request-id")) == 1


def test_content_length_over_the_limit_is_refused_before_reading(app: Appliance) -> None:
    """No 100 Continue, no body read: the 413 comes straight after the headers."""
    with socket.create_connection(("127.0.0.1", app.port), 5) as s:
        s.sendall(b"POST /limited HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 13000000\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]


def test_client_gone_while_upstream_thinks_aborts_it_and_logs_499(app: Appliance, upstream_a: Upstream) -> None:
    with socket.create_connection(("127.0.0.1", app.port), 5) as s:
        s.sendall(b"GET /think/3?abort HTTP/1.1\r\nHost: app.example.test\r\nX-Request-Id: ignored\r\n\r\n")
        deadline = time.monotonic() + 5  # leave only once the upstream is thinking about it
        while "GET /think/3?abort" not in upstream_a.seen():
            assert time.monotonic() < deadline, "the request never reached the upstream"
            time.sleep(0.02)
    deadline = time.monotonic() + 5
    while not any("ABORTED /think/3?abort" in line for line in upstream_a.seen()):
        assert time.monotonic() < deadline, "the upstream request ran on"
        time.sleep(0.05)
    record = next(r for r in _wait_records(app, lambda r: r["path"] == "/think/3"))
    assert (record["status"], record["reason"]) == (499, "client_gone")


def test_mid_response_upstream_timeout_is_logged_with_the_status_sent(app: Appliance) -> None:
    with pytest.raises(httpx.HTTPError):
        get(app, "/slow-body/3")
    record = next(r for r in _wait_records(app, lambda r: r["path"] == "/slow-body/3"))
    assert (record["status"], record["reason"], record["verdict"]) == (200, "upstream_timeout", "error")
    assert "Traceback" not in app.logs()


def test_websocket_close_from_the_origin_reaches_the_client(app: Appliance) -> None:
    async def run() -> tuple[str, int | None, str]:
        async with websockets.connect("ws://app.example.test/ws-close",
                                      host="127.0.0.1", port=app.port, proxy=None, open_timeout=5) as ws:
            first = await asyncio.wait_for(ws.recv(), 5)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code is not None
            return str(first), ws.close_code, ws.close_reason or ""
    first, code, reason = asyncio.run(run())
    assert (first, code, reason) == ("bye soon", 4001, "origin says bye")


def test_websocket_close_code_from_the_client_reaches_the_origin(app: Appliance, upstream_a: Upstream) -> None:
    """The code arrives; the reason cannot yet: granian's ``websocket.disconnect`` omits it."""
    async def run() -> None:
        async with websockets.connect("ws://app.example.test/ws-record-close",
                                      host="127.0.0.1", port=app.port, proxy=None, open_timeout=5) as ws:
            await ws.close(code=4002, reason="client leaves")
    asyncio.run(run())
    deadline = time.monotonic() + 5
    while not any(line.startswith("WSCLOSE 4002") for line in upstream_a.seen()):
        assert time.monotonic() < deadline, upstream_a.seen()[-5:]
        time.sleep(0.05)


def test_websocket_refused_by_the_origin_shows_its_status_and_request_id(app: Appliance) -> None:
    async def run() -> websockets.InvalidStatus:
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect("ws://app.example.test/ws-refuse",
                                     host="127.0.0.1", port=app.port, proxy=None, open_timeout=5)
        return info.value
    refused = asyncio.run(run())
    assert refused.response.status_code == 400
    assert refused.response.headers.get("x-request-id")


def _wait_records(app: Appliance, match: object, timeout: float = 5.0) -> Iterator[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in (app.access_records() if app.access_log.exists() else []) if match(r)]  # type: ignore[operator]
        if found:
            return iter(found)
        if time.monotonic() > deadline:
            raise AssertionError("no matching access log record")
        time.sleep(0.1)
