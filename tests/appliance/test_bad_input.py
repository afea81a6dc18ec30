"""Malformed and hostile requests: a 4xx from the appliance, never a 500, never forwarded."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..harness import Appliance, Upstream, raw_request, start_appliance, stop


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream) -> Iterator[Appliance]:
    tmp = tmp_path_factory.mktemp("bad")
    appliance = start_appliance(tmp, f"  - hosts: [app.example.test]\n    upstream: {upstream_a.url}\n",
                                "limits: {max_header_size: 8k}\n")
    yield appliance
    stop(appliance.proc)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0


def has_request_id(response: bytes) -> bool:
    head = response.partition(b"\r\n\r\n")[0].lower()
    return b"\r\nx-request-id: " in head


# (case, raw request, expected status, whether the appliance's own handler answers with a request id)
CASES = [
    ("missing host on HTTP/1.1", b"GET /m1 HTTP/1.1\r\n\r\n", 400, True),
    ("empty host", b"GET /m2 HTTP/1.1\r\nHost: \r\n\r\n", 400, True),
    ("invalid host characters", b"GET /m12 HTTP/1.1\r\nHost: localhost%00\r\n\r\n", 400, True),
    ("absolute-form unknown host", b"GET http://unknown.test/m3 HTTP/1.1\r\nHost: unknown.test\r\n\r\n", 421, True),
    ("oversized header", b"GET /m4 HTTP/1.1\r\nHost: app.example.test\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, True),
    ("many headers", b"GET /m5 HTTP/1.1\r\nHost: app.example.test\r\n" + b"X-A: 12345678901234567890\r\n" * 400 + b"\r\n", 431, False),
    ("garbage request line", b"GARBAGE /m6\r\n\r\n", 400, False),
    ("bad version", b"GET /m7 HTTP/9.9\r\nHost: app.example.test\r\n\r\n", 400, False),
    ("space in header name", b"GET /m8 HTTP/1.1\r\nHost: app.example.test\r\nBad Header: x\r\n\r\n", 400, False),
    ("duplicate content-length", b"POST /m9 HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, False),
    ("non-numeric content-length", b"POST /m10 HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: abc\r\n\r\n", 400, False),
    ("bad chunk size", b"POST /m11 HTTP/1.1\r\nHost: app.example.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, False),
]


@pytest.mark.parametrize(("case", "request_bytes", "status", "own"), CASES, ids=[c[0] for c in CASES])
def test_malformed_request_is_refused_and_not_forwarded(
    app: Appliance, upstream_a: Upstream, case: str, request_bytes: bytes, status: int, own: bool
) -> None:
    path = request_bytes.split(b" ")[1].decode(errors="replace").rsplit("/", 1)[-1]
    out = raw_request(app.port, request_bytes, timeout=1.5)
    assert status_of(out) == status, out[:300]
    assert b"Traceback" not in out
    if own:
        assert has_request_id(out), out[:300]
    assert not any(line.endswith("/" + path) for line in upstream_a.seen()), f"{case} reached the upstream"


def test_cl_te_smuggling_never_desyncs_the_upstream(app: Appliance, upstream_a: Upstream) -> None:
    """CL and TE together: the server (hyper) drops Content-Length and reads the body as chunked, so
    the request is answered (200) with an empty body; the bytes after the chunked terminator are
    never forwarded as a request of their own."""
    smuggle = (b"POST /cl-te HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 60\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled-cl-te HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
    out = raw_request(app.port, smuggle, timeout=1.5)
    assert status_of(out) == 200
    assert b'"body_bytes": 0' in out
    assert not any("smuggled-cl-te" in line for line in upstream_a.seen())


def test_te_cl_smuggling(app: Appliance, upstream_a: Upstream) -> None:
    inner = b"GPOST /smuggled-te-cl HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 15\r\n\r\nx=1"
    smuggle = (b"POST /te-cl HTTP/1.1\r\nHost: app.example.test\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Length: 4\r\n\r\n" + f"{len(inner):x}".encode() + b"\r\n" + inner + b"\r\n0\r\n\r\n")
    out = raw_request(app.port, smuggle, timeout=1.5)
    assert status_of(out) == 200
    assert f'"body_bytes": {len(inner)}'.encode() in out  # the inner request is body, never a request
    assert not any("smuggled-te-cl" in line for line in upstream_a.seen())


def test_obfuscated_transfer_encoding(app: Appliance, upstream_a: Upstream) -> None:
    smuggle = (b"POST /te-obf HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 50\r\n"
               b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /smuggled-obf HTTP/1.1\r\nHost: x\r\n\r\n")
    out = raw_request(app.port, smuggle, timeout=1.5)
    assert status_of(out) == 400
    assert not any("smuggled-obf" in line or "te-obf" in line for line in upstream_a.seen())


def test_appliance_keeps_serving_after_bad_input(app: Appliance) -> None:
    out = raw_request(app.port, b"GET /after HTTP/1.1\r\nHost: app.example.test\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 200
    assert "Traceback" not in app.logs()
