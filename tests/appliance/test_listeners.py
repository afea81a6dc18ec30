"""TLS and HTTP/2 listeners, upstream HTTPS verification, the admin listener and the access log."""
from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..harness import Appliance, Upstream, free_port, start_appliance, start_upstream, stop


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path]) -> Iterator[Upstream]:
    up = start_upstream(tmp_path_factory.mktemp("tlsup"), "TLS", tls=tls_files)
    yield up
    stop(up.proc)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream, tls_upstream: Upstream,
        tls_files: tuple[Path, Path]) -> Iterator[Appliance]:
    tmp = tmp_path_factory.mktemp("listeners")
    cert, key = tls_files
    tls_port = free_port()
    domains = f"""\
  - hosts: [app.example.test, localhost]
    upstream: {upstream_a.url}
  - hosts: [verified.test]
    upstream: {{urls: ["{tls_upstream.url}"], ca_file: {cert}}}
  - hosts: [unverified.test]
    upstream: {{urls: ["{tls_upstream.url}"], tls_verify: false}}
  - hosts: [untrusted.test]
    upstream: {tls_upstream.url}
"""
    appliance = start_appliance(tmp, domains, f"tls: {{listen: '127.0.0.1:{tls_port}', cert: {cert}, key: {key}}}\n")
    appliance.tls_port = tls_port  # type: ignore[attr-defined]
    yield appliance
    stop(appliance.proc)


@pytest.mark.parametrize("http2", [False, True])
def test_tls_listener_http1_and_http2(app: Appliance, tls_files: tuple[Path, Path], http2: bool) -> None:
    ctx = ssl.create_default_context(cafile=str(tls_files[0]))
    with httpx.Client(verify=ctx, http2=http2) as client:
        resp = client.get(f"https://localhost:{app.tls_port}/echo")  # type: ignore[attr-defined]
    assert resp.status_code == 200
    assert resp.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    data = resp.json()
    assert data["server"] == "A"
    assert ["X-Forwarded-Proto", "https"] in data["headers"]


def test_h2c_prior_knowledge_on_plain_listener(app: Appliance) -> None:
    with httpx.Client(http1=False, http2=True) as client:
        resp = client.get(app.url + "/echo", headers={"Host": "app.example.test"})
    assert resp.status_code == 200 and resp.http_version == "HTTP/2"


@pytest.mark.parametrize(("host", "status"), [("verified.test", 200), ("unverified.test", 200), ("untrusted.test", 502)])
def test_upstream_https_verification(app: Appliance, host: str, status: int) -> None:
    resp = httpx.get(app.url + "/echo", headers={"Host": host}, timeout=10)
    assert resp.status_code == status
    if status == 200:
        assert resp.json()["server"] == "TLS"


def test_health_and_readiness(app: Appliance) -> None:
    assert httpx.get(app.admin + "/healthz").json() == {"status": "ok"}
    assert httpx.get(app.admin + "/readyz").json() == {"status": "ready"}


def test_metrics_count_requests_by_domain_status_verdict(app: Appliance) -> None:
    for _ in range(3):
        httpx.get(app.url + "/m", headers={"Host": "app.example.test"})
    httpx.get(app.url + "/m", headers={"Host": "nowhere.test"})
    deadline = time.monotonic() + 3  # workers publish their counts twice a second
    while 'domain="-",status="421"' not in (text := httpx.get(app.admin + "/metrics").text):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    line = next(x for x in text.splitlines()
                if x.startswith('edgeward_requests_total{domain="app.example.test",status="200",verdict="allow"}'))
    assert float(line.split()[-1]) >= 3
    assert 'edgeward_requests_total{domain="-",status="421",verdict="reject"}' in text
    assert 'edgeward_request_duration_seconds_bucket{domain="app.example.test",le="0.1"}' in text


def test_admin_api_requires_the_token(app: Appliance) -> None:
    assert httpx.post(app.admin + "/api/reload").status_code == 401
    assert httpx.post(app.admin + "/api/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = httpx.post(app.admin + "/api/reload", headers={"Authorization": "Bearer test-admin-token"})
    assert ok.status_code == 200 and ok.json() == {"reloaded": True}
    assert "test-admin-token" not in app.logs()


def test_access_log_is_one_json_line_per_request(app: Appliance) -> None:
    resp = httpx.get(app.url + "/logged?q=1", headers={"Host": "app.example.test"})
    record = app.access_record(resp.headers["x-request-id"])
    assert record["domain"] == "app.example.test" and record["route"] == "/"
    assert record["client_ip"] == "127.0.0.1" and record["status"] == 200 and record["path"] == "/logged"
    assert record["bytes"] == len(resp.content)
    assert record["upstream"].startswith("127.0.0.1:")  # type: ignore[union-attr]
    assert isinstance(record["duration_ms"], float) and record["time"].endswith("Z")  # type: ignore[union-attr]
    assert record["verdict"] == "allow"
