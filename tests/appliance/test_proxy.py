"""The proxy through a real appliance process, real upstream processes and real sockets."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from ..harness import Appliance, Upstream, free_port, raw_request, start_appliance, stop


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream, upstream_b: Upstream) -> Iterator[Appliance]:
    tmp = tmp_path_factory.mktemp("proxy")
    dead = free_port()
    domains = f"""\
  - hosts: [app.example.test, "*.wild.test"]
    upstream: {upstream_a.url}
    routes:
      - path: /api
        upstream: {upstream_b.url}
      - path: /api/a
      - path: /limited
        max_body_size: 1k
      - path: /sleep
        timeouts: {{connect: 1s, read: 1s, total: 5s}}
      - path: /slow-body
        timeouts: {{read: 1s}}
  - hosts: [rr.test]
    upstream: [{upstream_a.url}, {upstream_b.url}]
  - hosts: [half-dead.test]
    upstream: {{urls: ["http://127.0.0.1:{dead}", "{upstream_b.url}"], fail_timeout: 30s}}
  - hosts: [dead.test]
    upstream: http://127.0.0.1:{dead}
  - hosts: [nohost.test]
    upstream: {upstream_a.url}
    preserve_host: false
"""
    extra = "trusted_proxies: [127.0.0.2/32]\nlimits: {max_header_size: 8k}\n"
    appliance = start_appliance(tmp, domains, extra)
    yield appliance
    stop(appliance.proc)


def get(app: Appliance, path: str, host: str = "app.example.test", **kw: object) -> httpx.Response:
    headers = {"Host": host, **kw.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(kw.pop("method", "GET"), app.url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def echo(resp: httpx.Response) -> dict[str, object]:
    assert resp.status_code == 200, resp.text
    return resp.json()


def header(data: dict[str, object], name: str) -> list[str]:
    return [v for k, v in data["headers"] if k.lower() == name.lower()]  # type: ignore[union-attr]


def test_proxies_host_to_upstream_with_raw_target(app: Appliance) -> None:
    data = echo(get(app, "/a%3Fb//c/%2e%2e/d?x=1&y=%20"))
    assert data["server"] == "A"
    assert data["path"] == "/a%3Fb//c/%2e%2e/d?x=1&y=%20"  # not decoded, not re-encoded


@pytest.mark.parametrize(("host", "server"), [
    ("app.example.test", "A"), ("APP.EXAMPLE.TEST:8080", "A"), ("x.wild.test", "A"), ("a.b.wild.test", "A"),
])
def test_exact_and_wildcard_hosts_port_ignored(app: Appliance, host: str, server: str) -> None:
    assert echo(get(app, "/", host=host))["server"] == server


@pytest.mark.parametrize(("path", "server"), [
    ("/", "A"), ("/api", "B"), ("/api/x", "B"), ("/api/a/x", "A"), ("/apix", "B"), ("/other/api", "A"),
])
def test_longest_prefix_route_picks_upstream(app: Appliance, path: str, server: str) -> None:
    assert echo(get(app, path))["server"] == server


@pytest.mark.parametrize("host", ["unknown.test", "wild.test", "app.example.test.evil"])
def test_unknown_host_is_never_proxied(app: Appliance, upstream_a: Upstream, host: str) -> None:
    before = len(upstream_a.seen())
    resp = get(app, f"/never-{host}", host=host)
    assert resp.status_code == 421
    assert resp.headers["x-request-id"]
    assert resp.text == "Unknown host\n"
    assert not any(f"/never-{host}" in line for line in upstream_a.seen()[before:])


def test_forwarding_headers_and_request_id(app: Appliance) -> None:
    resp = get(app, "/", headers={"X-Forwarded-For": "6.6.6.6", "X-Request-Id": "forged", "X-Forwarded-Proto": "https"})
    data = echo(resp)
    rid = resp.headers["x-request-id"]
    assert rid != "forged" and len(rid) == 32
    assert header(data, "X-Request-Id") == [rid]
    assert header(data, "X-Forwarded-For") == ["127.0.0.1"]  # untrusted peer: its XFF is dropped
    assert header(data, "X-Forwarded-Proto") == ["http"]
    assert header(data, "X-Forwarded-Host") == ["app.example.test"]
    assert header(data, "Host") == ["app.example.test"]


def test_trusted_proxy_keeps_request_id_and_client_ip(app: Appliance) -> None:
    req = (b"GET /trusted HTTP/1.1\r\nHost: app.example.test\r\nX-Forwarded-For: 6.6.6.6, 198.51.100.7\r\n"
           b"Forwarded: for=198.51.100.7\r\nX-Real-IP: 6.6.6.6\r\n"
           b"X-Request-Id: from-the-lb-123\r\nConnection: close\r\n\r\n")
    out = raw_request(app.port, req, source="127.0.0.2")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"x-request-id: from-the-lb-123" in head.lower()
    data = json.loads(body)
    assert header(data, "X-Forwarded-For") == ["6.6.6.6, 198.51.100.7, 127.0.0.2"]
    assert header(data, "Forwarded") == ['for=198.51.100.7, for=127.0.0.2;proto=http;host="app.example.test"']
    assert header(data, "X-Real-IP") == ["198.51.100.7"]  # the resolved client, never the one sent
    record = app.access_record("from-the-lb-123")
    assert record["client_ip"] == "198.51.100.7"


def test_preserve_host_off_sends_upstream_host(app: Appliance, upstream_a: Upstream) -> None:
    data = echo(get(app, "/", host="nohost.test"))
    assert header(data, "Host") == [f"127.0.0.1:{upstream_a.port}"]
    assert header(data, "X-Forwarded-Host") == ["nohost.test"]


def test_hop_by_hop_headers_removed_both_ways(app: Appliance) -> None:
    req = (b"GET / HTTP/1.1\r\nHost: app.example.test\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n"
           b"Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic c2VjcmV0\r\nX-Kept: yes\r\n\r\n")
    out = raw_request(app.port, req, timeout=1.0)
    head, _, body = out.partition(b"\r\n\r\n")
    data = json.loads(body)
    names = {k.lower() for k, _ in data["headers"]}
    assert not names & {"x-private", "keep-alive", "te", "proxy-authorization"}
    assert "x-kept" in names
    response_names = {line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:]}
    assert b"keep-alive" not in response_names and b"proxy-authenticate" not in response_names
    assert b"x-upstream" in response_names


def test_round_robin_over_upstream_urls(app: Appliance) -> None:
    with httpx.Client(headers={"Host": "rr.test"}) as client:
        servers = [client.get(app.url + "/").json()["server"] for _ in range(8)]
    assert servers.count("A") >= 2 and servers.count("B") >= 2


def test_passive_health_skips_a_failing_upstream(app: Appliance) -> None:
    with httpx.Client(headers={"Host": "half-dead.test"}) as client:
        statuses = [client.get(app.url + "/").status_code for _ in range(10)]
    assert statuses == [200] * 10  # a GET that hits the dead one is retried on the live one


def test_upstream_down_is_502_with_request_id(app: Appliance) -> None:
    resp = get(app, "/", host="dead.test", headers={"Accept": "application/json"})
    assert resp.status_code == 502
    assert resp.json()["request_id"] == resp.headers["x-request-id"]
    assert "127.0.0.1" not in resp.text  # no internals leak to the client


def test_read_timeout_is_504_without_hanging(app: Appliance) -> None:
    started = time.monotonic()
    resp = get(app, "/sleep/5")
    assert resp.status_code == 504
    assert resp.headers["x-request-id"]
    assert time.monotonic() - started < 3
    assert get(app, "/sleep/0.1").status_code == 200


def test_stall_mid_body_cuts_the_response(app: Appliance) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        get(app, "/slow-body/5")
    assert time.monotonic() - started < 3


def test_upstream_reset_is_502(app: Appliance) -> None:
    assert get(app, "/reset").status_code == 502


def test_upstream_status_and_body_pass_through(app: Appliance) -> None:
    resp = get(app, "/status/418")
    assert resp.status_code == 418 and resp.text == "status\n"
    resp = get(app, "/echo", method="POST", content=b"hello world")
    assert resp.json()["body_bytes"] == 11


def test_head_request(app: Appliance) -> None:
    resp = get(app, "/", method="HEAD")
    assert resp.status_code == 200 and resp.content == b""


def test_body_limit_413(app: Appliance) -> None:
    resp = get(app, "/limited", method="POST", content=b"x" * 2048)
    assert resp.status_code == 413 and resp.headers["x-request-id"]
    chunked = get(app, "/limited", method="POST", content=iter([b"x" * 600, b"y" * 600]))
    assert chunked.status_code == 413
    assert get(app, "/limited", method="POST", content=b"x" * 1000).status_code == 200


@pytest.mark.parametrize("chunks", [1, 7])
def test_chunked_upload_arrives_whole(app: Appliance, chunks: int) -> None:
    data = [bytes([i]) * 100_000 for i in range(chunks)]
    resp = get(app, "/upload", method="PUT", content=iter(data))
    import hashlib

    assert resp.json()["body_bytes"] == 100_000 * chunks
    assert resp.json()["body_sha256"] == hashlib.sha256(b"".join(data)).hexdigest()
