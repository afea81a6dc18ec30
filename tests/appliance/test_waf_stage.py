"""OWASP CRS 3.3.4 through the appliance: modes, policies, exclusions, body processors, limits,
response inspection, known mapping bypasses and hostile bytes. Real processes, real sockets."""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from ..harness import copy_state, Appliance, Upstream, raw_request, start_appliance, stop

SQLI = "1' or 1=1--"
XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream, crs_state: Path) -> Iterator[Appliance]:
    up = upstream_a.url
    domains = f"""\
  - hosts: [block.test]
    upstream: {up}
    waf: {{mode: block}}
    routes:
      - {{path: /api, waf: {{mode: detect}}}}
      - {{path: /open, waf: {{mode: off}}}}
  - hosts: [detect.test]
    upstream: {up}
    waf: {{mode: detect}}
  - hosts: [off.test]
    upstream: {up}
    waf: {{mode: off}}
  - hosts: [open.test]
    upstream: {up}
    waf: {{mode: block}}
    routes:
      - {{path: /upload, waf: {{mode: off}}}}
  - hosts: [excl.test]
    upstream: {up}
    waf:
      mode: block
      exclusions:
        - {{rules: [942100], target: "ARGS:q", path: /search, reason: "search box"}}
        - {{tags: [attack-xss], path: /cms, methods: [POST]}}
  - hosts: [limit.test]
    upstream: {up}
    waf: {{mode: block, body_limit: 1k}}
  - hosts: [partial.test]
    upstream: {up}
    waf: {{mode: block, body_limit: 1k, body_limit_action: inspect_partial}}
  - hosts: [resp.test]
    upstream: {up}
    waf: {{mode: block, inspect_response: true}}
  - hosts: [hex.test]
    upstream: {up}
    waf:
      mode: block
      directives: |
        SecRule ARGS "@rx ^zz$" "id:12345,phase:2,t:none,t:hexDecode,pass,log,msg:'hexDecode probe'"
        SecRule REQUEST_URI_RAW "@beginsWith /probe/%2527" "id:12346,phase:1,t:none,deny,status:418,log"
        SecRule ARGS:d "@streq %27" "id:12347,phase:2,t:none,deny,status:419,log"
        SecRule REQUEST_FILENAME "@beginsWith //double/" "id:12348,phase:1,t:none,deny,status:420,log"
        SecRule REQUEST_FILENAME "@contains secret" "id:12349,phase:1,t:none,deny,status:421,log"
        SecRule ARGS:ssn "@verifySSN \\d" "id:12350,phase:2,t:none,pass,log"
        SecRule ARGS:cpf "@verifyCPF \\d" "id:12351,phase:2,t:none,pass,log"
"""
    appliance = start_appliance(tmp_path_factory.mktemp("waf"), domains, state_dir=copy_state(crs_state))
    yield appliance
    stop(appliance.proc)


def req(app: Appliance, host: str, path: str = "/", method: str = "GET", **kw: object) -> httpx.Response:
    headers = {"Host": host, "User-Agent": "edgeward-tests", "Accept": "*/*", **kw.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(method, app.url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


_MULTIPART = "multipart/form-data; boundary=b0undary"


def _multipart(*fields: tuple[str, str]) -> str:
    return "".join(f'--b0undary\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n' for n, v in fields) + "--b0undary--\r\n"


CASES = [
    # (case, host, method, path, body, content-type, extra headers, expected status)
    ("benign get", "block.test", "GET", "/search?q=hello+world&page=2", None, None, {}, 200),
    ("sqli in query", "block.test", "GET", "/?q=1%27%20or%201%3D1--", None, None, {}, 403),
    ("sqli in query, detect", "detect.test", "GET", "/?q=1%27%20or%201%3D1--", None, None, {}, 200),
    ("sqli in query, off", "off.test", "GET", "/?q=1%27%20or%201%3D1--", None, None, {}, 200),
    ("route in detect mode", "block.test", "GET", "/api/x?q=1%27%20or%201%3D1--", None, None, {}, 200),
    ("route with waf off", "block.test", "GET", "/open/x?q=1%27%20or%201%3D1--", None, None, {}, 200),
    ("xss in referer", "block.test", "GET", "/", None, None, {"Referer": XSS}, 403),
    ("sqli in cookie", "block.test", "GET", "/", None, None, {"Cookie": f"sid={SQLI}"}, 403),
    ("scanner user-agent", "block.test", "GET", "/", None, None, {"User-Agent": "sqlmap/1.5"}, 403),
    ("urlencoded body", "block.test", "POST", "/form", f"q={SQLI}", "application/x-www-form-urlencoded", {}, 403),
    ("benign urlencoded body", "block.test", "POST", "/form", "q=hello&x=2", "application/x-www-form-urlencoded", {}, 200),
    ("json body", "block.test", "POST", "/json", json.dumps({"a": "1 union select password from users"}), "application/json", {}, 403),
    ("benign json body", "block.test", "POST", "/json", json.dumps({"a": "hello", "n": [1, 2]}), "application/json", {}, 200),
    ("json body, wrong content type", "block.test", "POST", "/json", json.dumps({"a": "1 union select password from users"}),
     "application/x-www-form-urlencoded", {}, 403),
    ("invalid json", "block.test", "POST", "/json", '{"a": ', "application/json", {}, 400),
    ("xml body", "block.test", "POST", "/x", f"<a><b>{SQLI} union select password from users</b></a>", "text/xml", {}, 403),
    ("xml bomb", "block.test", "POST", "/x",
     '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
     '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
     '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">]><l>&f;&f;&f;</l>',
     "application/xml", {}, 400),
    ("multipart field", "block.test", "POST", "/upload",
     "--b0undary\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\n" + SQLI + "\r\n--b0undary--\r\n",
     "multipart/form-data; boundary=b0undary", {}, 403),
    ("multipart unmatched boundary", "block.test", "POST", "/upload",
     "--b0undary\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nhello\r\n--b0undaryX\r\n--b0undary--\r\n",
     "multipart/form-data; boundary=b0undary", {}, 400),
    ("multipart part header with an unterminated quote (3.0.9 parser reads past it)", "block.test", "POST", "/upload",
     "--b0undary\r\nContent-Disposition: form-data; name=\"q\"; filename=\"a.txt\r\n\r\n<?php system($_GET['c']); ?>\r\n--b0undary--\r\n",
     "multipart/form-data; boundary=b0undary", {}, 400),
    ("%3F in the path (CVE-2024-1019)", "block.test", "GET", "/foo%3F%3Cscript%3Ealert(1)%3C/script%3E", None, None, {}, 403),
    ("%3F cannot hide the rest of the path from path rules (CVE-2024-1019)", "hex.test", "GET", "/x%3fsecret",
     None, None, {}, 421),
    ("@verifySSN / @verifyCPF on one character (CVE-2026-42268)", "hex.test", "GET", "/?ssn=1&cpf=1", None, None, {}, 200),
    ("REQUEST_URI_RAW is the raw target", "hex.test", "GET", "/probe/%2527", None, None, {}, 418),
    ("ARGS are decoded exactly once", "hex.test", "GET", "/x?d=%2527", None, None, {}, 419),
    ("//path reaches the engine as sent", "hex.test", "GET", "//double/slash", None, None, {}, 420),
    ("attack behind //", "block.test", "GET", "//x?q=1%27%20or%201%3D1--", None, None, {}, 403),
    ("exclusion: ARGS:q under /search", "excl.test", "GET", "/search?q=1%27%20or%201%3D1--", None, None, {}, 200),
    ("exclusion: other path", "excl.test", "GET", "/other?q=1%27%20or%201%3D1--", None, None, {}, 403),
    ("exclusion: other argument", "excl.test", "GET", "/search?x=1%27%20or%201%3D1--", None, None, {}, 403),
    ("exclusion by tag and method", "excl.test", "POST", "/cms/save", f"html={XSS}", "application/x-www-form-urlencoded", {}, 200),
    ("exclusion by tag: other method", "excl.test", "GET", "/cms/save?html=%3Cscript%3Ealert(1)%3C/script%3E", None, None, {}, 403),
    ("body over limit", "limit.test", "POST", "/form", "q=" + "a" * 2000, "application/x-www-form-urlencoded", {}, 413),
    ("body under limit", "limit.test", "POST", "/form", "q=" + "a" * 500, "application/x-www-form-urlencoded", {}, 200),
    ("partial: attack past the limit", "partial.test", "POST", "/form", "a=" + "a" * 1100 + f"&q={SQLI}",
     "application/x-www-form-urlencoded", {}, 200),
    ("partial: attack within the limit", "partial.test", "POST", "/form", f"q={SQLI}&a=" + "a" * 1100,
     "application/x-www-form-urlencoded", {}, 403),
    ("partial multipart: benign, cut in its last part", "partial.test", "POST", "/upload", _multipart(("a", "hello"), ("big", "x" * 3000)),
     _MULTIPART, {}, 200),
    ("partial multipart: attack in a part within the limit", "partial.test", "POST", "/upload",
     _multipart(("q", SQLI), ("big", "x" * 3000)), _MULTIPART, {}, 403),
    ("partial multipart: attack in the part the limit cuts", "partial.test", "POST", "/upload",
     _multipart(("a", "hello"), ("big", "x" * 300 + SQLI + "x" * 3000)), _MULTIPART, {}, 403),
    ("partial multipart: attack past the limit", "partial.test", "POST", "/upload",
     _multipart(("a", "hello"), ("big", "x" * 3000), ("q", SQLI)), _MULTIPART, {}, 200),
    ("partial json: benign", "partial.test", "POST", "/json", json.dumps({"a": "hello", "big": "x" * 3000}), "application/json", {}, 200),
    ("partial json: attack within the limit", "partial.test", "POST", "/json", json.dumps({"a": SQLI, "big": "x" * 3000}),
     "application/json", {}, 403),
    ("partial xml: benign", "partial.test", "POST", "/x", "<r><a>hello</a><big>" + "x" * 3000 + "</big></r>", "text/xml", {}, 200),
    ("partial xml: attack within the limit", "partial.test", "POST", "/x",
     f"<r><a>{SQLI} union select password from users</a><big>" + "x" * 3000 + "</big></r>", "text/xml", {}, 403),
    ("response leaks an SQL error", "resp.test", "GET", "/", None, None,
     {"X-Note": "You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version"}, 403),
    ("benign response", "resp.test", "GET", "/", None, None, {}, 200),
    ("t:hexDecode on a one-character argument (CVE-2026-30923)", "hex.test", "GET", "/?a=1", None, None, {}, 200),
]


@pytest.mark.parametrize(("case", "host", "method", "path", "body", "ctype", "headers", "status"), CASES,
                         ids=[c[0] for c in CASES])
def test_crs_verdicts(app: Appliance, case: str, host: str, method: str, path: str, body: str | None,
                      ctype: str | None, headers: dict[str, str], status: int) -> None:
    extra = dict(headers)
    if ctype:
        extra["Content-Type"] = ctype
    resp = req(app, host, path, method, headers=extra, content=body.encode() if body is not None else None)
    assert resp.status_code == status, resp.text[:300]
    assert resp.headers["x-request-id"]


def test_block_page_by_accept_without_rule_details(app: Appliance) -> None:
    resp = req(app, "block.test", "/?q=1%27%20or%201%3D1--", headers={"Accept": "application/json"})
    assert resp.status_code == 403
    assert resp.json() == {"status": 403, "error": "Forbidden", "request_id": resp.headers["x-request-id"]}
    html = req(app, "block.test", "/?q=1%27%20or%201%3D1--", headers={"Accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html") and html.headers["x-request-id"] in html.text
    for body in (resp.text, html.text):
        assert "942100" not in body and "SQL" not in body and "libinjection" not in body


def test_detect_mode_logs_would_block(app: Appliance) -> None:
    resp = req(app, "detect.test", "/?q=1%27%20or%201%3D1--")
    assert resp.status_code == 200
    assert app.access_record(resp.headers["x-request-id"])["verdict"] == "detect"
    record = app.access_record(resp.headers["x-request-id"])
    assert {942100, 949110} <= set(record["waf_rules"]) and record["waf_score"] >= 5  # type: ignore[call-overload, operator]
    assert "1' or" not in json.dumps(record)  # rule ids only, never the matched data
    benign = req(app, "detect.test", "/?q=hello")
    assert app.access_record(benign.headers["x-request-id"])["verdict"] == "allow"
    assert app.access_record(benign.headers["x-request-id"])["waf_rules"] == []
    unprotected = req(app, "off.test", "/?q=1%27%20or%201%3D1--")
    assert "waf_rules" not in app.access_record(unprotected.headers["x-request-id"])


def test_blocked_requests_never_reach_the_upstream(app: Appliance, upstream_a: Upstream) -> None:
    resp = req(app, "block.test", "/never-here?q=1%27%20or%201%3D1--")
    assert resp.status_code == 403
    assert not any("/never-here" in line for line in upstream_a.seen())


NON_UTF8 = [
    ("uri", b"GET /?q=%FF%FE%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\nAccept: */*\r\nConnection: close\r\n\r\n"),
    ("header", b"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\nAccept: */*\r\nReferer: \xff\xfe<script>alert(1)</script>\r\nConnection: close\r\n\r\n"),
    ("cookie", b"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\nAccept: */*\r\nCookie: a=\xff\xfe' or 1=1-- \r\nConnection: close\r\n\r\n"),
    ("body", b"POST / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\nAccept: */*\r\nContent-Type: application/x-www-form-urlencoded\r\n"
             b"Content-Length: 29\r\nConnection: close\r\n\r\nq=\xff\xfe<script>alert(1)</script>"),
]


@pytest.mark.parametrize(("where", "raw"), NON_UTF8, ids=[n[0] for n in NON_UTF8])
@pytest.mark.parametrize(("host", "status"), [("block.test", 403), ("detect.test", 200)])
def test_non_utf8_matches_never_break_the_stage(app: Appliance, where: str, raw: bytes, host: str, status: int) -> None:
    out = raw_request(app.port, raw.replace(b"{host}", host.encode()))
    assert out.startswith(b"HTTP/1.1 %d" % status), out[:300]
    assert b"x-request-id" in out.lower()


def test_worker_survives_hostile_input(app: Appliance) -> None:
    for _, raw in NON_UTF8:
        for host in ("block.test", "detect.test"):
            assert raw_request(app.port, raw.replace(b"{host}", host.encode())).startswith(b"HTTP/1.1 ")
    assert "Traceback" not in app.logs()
    assert req(app, "block.test", "/ok").status_code == 200


def test_inspect_response_streams_content_types_it_does_not_inspect(app: Appliance) -> None:
    """Server-sent events get their first event at once, not when the stream ends 3 s later."""
    started = time.monotonic()
    with httpx.stream("GET", app.url + "/events/3", headers={"Host": "resp.test"}, timeout=10) as resp:
        assert resp.status_code == 200
        first = next(resp.iter_raw())
        assert time.monotonic() - started < 2.0, "the response was held back"
        assert first.startswith(b"data: first")


def test_inspect_response_still_inspects_text_bodies(app: Appliance) -> None:
    started = time.monotonic()
    resp = req(app, "resp.test", "/events/1?type=text/plain")
    assert resp.status_code == 200 and time.monotonic() - started >= 1.0  # held back, then inspected
    assert resp.text == "data: first\n\ndata: second\n\n"


def _chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_http2_bodies_without_a_length_reach_the_upstream_whole(app: Appliance) -> None:
    body = bytes(range(256)) * 400  # 100 KiB, streamed: no content-length on the HTTP/2 stream
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        resp = client.post(app.url + "/upload", content=_chunks(body), headers={"Host": "open.test"})
    assert resp.http_version == "HTTP/2" and resp.status_code == 200
    assert resp.json()["body_bytes"] == len(body)
    assert resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_http1_bodies_are_inspected_and_forwarded_whole(app: Appliance) -> None:
    attack = f"a=1&q={SQLI}".encode()
    headers = {"Host": "block.test", "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "t", "Accept": "*/*"}
    resp = httpx.post(app.url + "/form", content=_chunks(attack, 4), headers=headers, timeout=10)
    assert resp.status_code == 403
    benign = b"a=" + b"x" * 100_000
    resp = httpx.post(app.url + "/form", content=_chunks(benign), headers=headers, timeout=10)
    assert resp.status_code == 200 and resp.json()["body_bytes"] == len(benign)


def test_http2_bodies_without_a_length_are_inspected(app: Appliance) -> None:
    attack = f"a=1&q={SQLI}".encode()
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        resp = client.post(app.url + "/form", content=_chunks(attack, 4), headers={
            "Host": "block.test", "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "t", "Accept": "*/*"})
    assert resp.http_version == "HTTP/2" and resp.status_code == 403


def test_websocket_upgrades_are_inspected_like_any_get(app: Appliance) -> None:
    async def talk() -> str:
        async with websockets.connect("ws://block.test/ws", host="127.0.0.1", port=app.port, proxy=None,
                                      open_timeout=5, user_agent_header="edgeward-tests") as ws:
            return str(await asyncio.wait_for(ws.recv(), 5))

    async def attack() -> websockets.InvalidStatus:
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect("ws://block.test/ws?q=1%27%20or%201%3D1--", host="127.0.0.1", port=app.port,
                                     proxy=None, open_timeout=5, user_agent_header="edgeward-tests")
        return info.value

    assert asyncio.run(talk()).startswith("hello from A")
    refused = asyncio.run(attack())
    assert refused.response.status_code == 403 and refused.response.headers.get("x-request-id")


def test_a_long_inspection_does_not_stall_its_worker(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream,
                                                     crs_state: Path) -> None:
    """One worker inspects a body for seconds (each argument runs a regex to PCRE2's match limit)
    while the same worker answers other requests at once; the 2 s stall watchdog never fires."""
    domains = f"""\
  - hosts: [stall.test]
    upstream: {upstream_a.url}
    waf:
      mode: block
      directives: |
        SecRule ARGS:/^p/ "@rx ^(a|a)*$" "id:12399,phase:2,t:none,deny,status:403,log"
"""
    app = start_appliance(tmp_path_factory.mktemp("stall"), domains, "limits: {worker_stall_timeout: 2s}\n",
                          state_dir=copy_state(crs_state), workers=1)
    try:
        import threading

        before = set(app.worker_pids())
        body = "&".join(f"p{i}=" + "a" * 26 + "!" for i in range(80))
        slow: dict[str, object] = {}

        def post() -> None:
            started = time.monotonic()
            slow["status"] = _try(lambda: req(app, "stall.test", "/form", "POST", content=body.encode(), headers={
                "Content-Type": "application/x-www-form-urlencoded"}))
            slow["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=post)
        thread.start()
        quick = []
        while thread.is_alive() and len(quick) < 200:
            started = time.monotonic()
            assert _try(lambda: req(app, "stall.test", "/?q=fine")) == 200
            quick.append(time.monotonic() - started)
            time.sleep(0.02)
        thread.join(30)
        assert slow["status"] == 200 and float(slow["seconds"]) > 2.5, slow  # longer than the watchdog's timeout
        assert len(quick) >= 10 and max(quick) < 0.5, quick  # and the worker kept answering meanwhile
        assert set(app.worker_pids()) == before, "the watchdog replaced the worker"
        assert "Timeout (" not in app.logs()  # faulthandler's dump when the watchdog fires
    finally:
        stop(app.proc)


def _try(call: object) -> object:
    try:
        return call().status_code  # type: ignore[operator]
    except httpx.HTTPError as exc:
        return exc


def test_declared_body_over_the_waf_limit_is_refused_before_reading(app: Appliance) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", app.port), 5) as s:
        s.sendall(b"POST /form HTTP/1.1\r\nHost: limit.test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  b"Content-Length: 5000000\r\nExpect: 100-continue\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n")
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]  # no 100 Continue first, no body read


def test_xml_parser_errors_reach_the_log_not_stderr_verbatim(app: Appliance) -> None:
    resp = req(app, "block.test", "/upload/xml", "POST", headers={"Content-Type": "text/xml"},
               content=b"<a><b>attacker-text-QRS</a>")
    assert resp.status_code == 400  # CRS 200002: the body processor failed
    deadline = time.monotonic() + 3
    while "engine diagnostic: 'Opening and ending tag mismatch" not in app.logs():
        assert time.monotonic() < deadline, app.logs()[-2000:]
        time.sleep(0.05)
    assert "attacker-text-QRS" not in app.logs()


def _upload(name: str, content: bytes, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    head = "".join(f'--b0undary\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n' for n, v in extra)
    return (head.encode() + b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="' + name.encode()
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + content + b"\r\n--b0undary--\r\n")


def test_a_body_spooled_to_disk_is_inspected_and_forwarded_whole(app: Appliance) -> None:
    """Bodies beyond 1 MiB go to a spool file the engine reads; the upstream gets every byte."""
    content = bytes(range(256)) * (12 * 4096)  # 12 MiB, every byte value
    body = _upload("data.bin", content, (("note", "quarterly figures"),))
    resp = req(app, "block.test", "/upload", "POST", content=body, headers={"Content-Type": _MULTIPART})
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["body_bytes"] == len(body) and resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    attack = _upload("data.bin", content, (("note", SQLI),))
    assert req(app, "block.test", "/upload", "POST", content=attack, headers={"Content-Type": _MULTIPART}).status_code == 403
    chunked = req(app, "block.test", "/upload", "POST", content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                  headers={"Content-Type": _MULTIPART})  # no Content-Length: HTTP/1.1 chunked
    assert chunked.status_code == 200 and chunked.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_spooled_body_cut_by_inspect_partial_is_inspected_up_to_the_limit(tmp_path_factory: pytest.TempPathFactory,
                                                                           upstream_a: Upstream, crs_state: Path) -> None:
    domains = f"""\
  - hosts: [p.test]
    upstream: {upstream_a.url}
    waf: {{mode: block, body_limit: 2m, body_limit_action: inspect_partial}}
"""
    app = start_appliance(tmp_path_factory.mktemp("spool"), domains, state_dir=copy_state(crs_state))
    try:
        big = b"x" * (3 * 1024 * 1024)
        within = _upload("a.bin", big, (("q", SQLI),))
        beyond = _upload("a.bin", big) .replace(b"--b0undary--", f'--b0undary\r\nContent-Disposition: form-data; name="q"\r\n\r\n{SQLI}\r\n--b0undary--'.encode())
        headers = {"Content-Type": _MULTIPART}
        assert req(app, "p.test", "/u", "POST", content=within, headers=headers).status_code == 403
        resp = req(app, "p.test", "/u", "POST", content=beyond, headers=headers)
        assert resp.status_code == 200 and resp.json()["body_bytes"] == len(beyond)
    finally:
        stop(app.proc)
