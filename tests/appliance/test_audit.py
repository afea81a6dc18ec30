"""Audit records (tests/appliance/test_audit.py for appliance/stages/audit.py, the audit store, the
``edgeward audit`` commands and /api/audit): one record per blocked or would-be-blocked request,
with the request id the client saw, and no secret anywhere in the database."""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from ..harness import EDGEWARD, Appliance, Upstream, copy_state, start_appliance, stop

SQLI = "1' or 1=1--"
AUTH = {"Authorization": "Bearer test-admin-token"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream, crs_state: Path) -> Iterator[Appliance]:
    domains = f"""\
  - hosts: [shop.test]
    upstream: {upstream_a.url}
    waf: {{mode: block}}
  - hosts: [watch.test]
    upstream: {upstream_a.url}
    waf: {{mode: detect}}
"""
    appliance = start_appliance(tmp_path_factory.mktemp("audit"), domains, state_dir=copy_state(crs_state))
    yield appliance
    stop(appliance.proc)


def get(app: Appliance, host: str, path: str, **kw: object) -> httpx.Response:
    headers = {"Host": host, "User-Agent": "edgeward-tests", "Accept": "*/*", **kw.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(str(kw.pop("method", "GET")), app.url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def cli(app: Appliance, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGEWARD, "audit", *args, "-c", str(app.config)], capture_output=True, text=True, timeout=30)


def record(app: Appliance, request_id: str, timeout: float = 5.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        out = cli(app, "show", request_id, "--json")
        if out.returncode == 0:
            return json.loads(out.stdout)  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(out.stderr)
        time.sleep(0.2)


def test_a_blocked_request_has_one_record_with_its_request_id(app: Appliance) -> None:
    resp = get(app, "shop.test", "/search?q=" + httpx.URL("/", params={"x": SQLI}).query.decode()[2:])
    assert resp.status_code == 403
    rid = resp.headers["x-request-id"]
    rec = record(app, rid)
    assert rec["id"] == rid and rec["status"] == 403 and rec["domain"] == "shop.test" and rec["mode"] == "block"
    assert rec["stage"] == "waf" and rec["reason"] == "waf.anomaly" and rec["method"] == "GET"
    assert rec["client"] == {"ip": "127.0.0.1", "port": rec["client"]["port"]}  # type: ignore[index]
    waf = rec["waf"]
    assert isinstance(waf, dict) and waf["anomaly_score"] >= 5 and waf["bundle"].startswith("crs@")
    rules = {m["rule_id"]: m for m in waf["matches"]}
    assert {942100, 949110} <= set(rules)
    assert "application-multi" in rules[942100]["tags"] and rules[942100]["variable"] == "ARGS:q"  # tags: 3.0.9 omits them
    found = cli(app, "search", "--rule", "942100", "--json")
    assert found.returncode == 0 and rid in [json.loads(line)["id"] for line in found.stdout.splitlines()]
    assert rid not in cli(app, "search", "--rule", "941100", "--json").stdout
    assert rid in cli(app, "search", "--ip", "127.0.0.0/8", "--stage", "waf", "--since", "10m").stdout
    assert rid not in cli(app, "search", "--ip", "10.0.0.0/8").stdout
    shown = cli(app, "show", rid)
    assert "942100" in shown.stdout and "waf: bundle crs@" in shown.stdout


def test_benign_requests_leave_no_record_and_detect_mode_leaves_a_detect_record(app: Appliance) -> None:
    benign = get(app, "shop.test", "/search?q=hello")
    watched = get(app, "watch.test", "/?q=1%27%20or%201%3D1--")
    assert benign.status_code == 200 and watched.status_code == 200
    rec = record(app, watched.headers["x-request-id"])
    assert rec["mode"] == "detect" and rec["status"] == 200 and rec["stage"] == "waf"
    # the access log line is written by the done consumer before the audit one: once it is there,
    # the audit stage has decided about this request
    assert app.access_record(benign.headers["x-request-id"])["verdict"] == "allow"
    assert cli(app, "show", benign.headers["x-request-id"]).returncode == 1


def test_no_secret_reaches_the_audit_database(app: Appliance) -> None:
    token, session, password = "tok-9f8e7d6c5b4a", "sess-0123456789abcdef", "hunter2-correct-horse"
    resp = get(app, "shop.test", "/login", method="POST",
               headers={"Authorization": f"Bearer {token}", "Cookie": f"session={session}; probe={SQLI}",
                        "Content-Type": "application/x-www-form-urlencoded", "X-Api-Key": "visible-header"},
               content=f"user=alice&password={password}&q={SQLI}".encode())
    assert resp.status_code == 403
    rec = record(app, resp.headers["x-request-id"])
    headers = dict((k.lower(), v) for k, v in rec["headers"])  # type: ignore[union-attr]
    assert headers["authorization"] == "[redacted]" and headers["cookie"] == "[redacted]"
    assert headers["x-api-key"] == "visible-header"
    assert "password=[redacted]" in str(rec["body"]) and "user=alice" in str(rec["body"])
    cookie_matches = [m for m in rec["waf"]["matches"] if m["variable"].startswith("REQUEST_COOKIES")]  # type: ignore[index]
    assert cookie_matches and all(m["data"] == "[redacted]" for m in cookie_matches)
    db_dir = Path(yaml.safe_load(app.config.read_text())["state_dir"]) / "audit"
    stored = b"".join(p.read_bytes() for p in db_dir.iterdir() if p.is_file())
    for secret in (token, session, password):
        assert secret.encode() not in stored, secret


def test_admin_api_lists_pages_and_counts(app: Appliance) -> None:
    ids = [get(app, "shop.test", f"/p{i}?q=1%27%20or%201%3D1--").headers["x-request-id"] for i in range(3)]
    record(app, ids[-1])
    assert httpx.get(app.admin + "/api/audit").status_code == 401
    first = httpx.get(app.admin + "/api/audit", params={"limit": 2, "rule": 942100}, headers=AUTH).json()
    assert len(first["records"]) == 2 and first["next"]
    second = httpx.get(app.admin + "/api/audit", params={"limit": 2, "rule": 942100, "cursor": first["next"]},
                       headers=AUTH).json()
    seen = [r["id"] for r in first["records"] + second["records"]]
    assert len(seen) == len(set(seen)) and set(ids) <= set(seen)  # newest first, no record twice
    one = httpx.get(app.admin + f"/api/audit/{ids[0]}", headers=AUTH)
    assert one.status_code == 200 and one.json()["id"] == ids[0]
    assert httpx.get(app.admin + "/api/audit/nope", headers=AUTH).status_code == 404
    assert httpx.get(app.admin + "/api/audit", params={"ip": "not-an-ip"}, headers=AUTH).status_code == 400
    stats = httpx.get(app.admin + "/api/audit/stats", headers=AUTH).json()
    assert stats["total"] >= 3 and any(r["key"] == 942100 for r in stats["rules"])
    assert any(s["key"] == "waf" for s in stats["stages"])
    assert json.loads(cli(app, "stats", "--json").stdout)["total"] >= stats["total"]
    exported = cli(app, "export", "--format", "jsonl")
    assert set(ids) <= {json.loads(line)["id"] for line in exported.stdout.splitlines()}
    events = {e["metadata"]["uid"]: e for e in map(json.loads, cli(app, "export", "--format", "ocsf").stdout.splitlines())}
    event = events[ids[0]]
    assert (event["class_uid"], event["type_uid"], event["action"], event["disposition"]) == (4002, 400203, "Denied", "Blocked")
    assert event["http_request"]["url"]["path"] == "/p0" and event["http_response"]["code"] == 403
    assert event["firewall_rule"]["uid"] == "942100" and event["src_endpoint"]["ip"] == "127.0.0.1"


def test_a_corrupt_audit_database_stops_the_start_with_its_name(tmp_path: Path, upstream_a: Upstream) -> None:
    from ..harness import appliance_config, free_port

    state = tmp_path / "state"
    (state / "audit").mkdir(parents=True)
    (state / "audit" / "audit.db").write_bytes(b"this is not a database" * 100)
    config = tmp_path / "edgeward.yaml"
    config.write_text(appliance_config(tmp_path, free_port(), free_port(),
                                       f"  - hosts: [a.test]\n    upstream: {upstream_a.url}\n", state_dir=state))
    out = subprocess.run([EDGEWARD, "serve", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "audit.db" in out.stderr and "cannot open the audit database" in out.stderr and "Traceback" not in out.stderr


def test_readyz_reports_an_audit_database_that_broke_after_the_start(tmp_path_factory: pytest.TempPathFactory,
                                                                     upstream_a: Upstream) -> None:
    tmp = tmp_path_factory.mktemp("audit-ready")
    app = start_appliance(tmp, f"  - hosts: [a.test]\n    upstream: {upstream_a.url}\n")
    try:
        assert httpx.get(app.admin + "/readyz").status_code == 200
        db = Path(yaml.safe_load(app.config.read_text())["state_dir"]) / "audit" / "audit.db"
        for path in db.parent.iterdir():
            path.write_bytes(b"garbage" * 1000)
        resp = httpx.get(app.admin + "/readyz")
        assert resp.status_code == 503 and "audit" in resp.json()
    finally:
        stop(app.proc)


def test_records_are_forwarded_to_syslog_and_a_webhook_that_fails_at_first(
        tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream, crs_state: Path) -> None:
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from ..harness import free_port

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(10)
    received: list[list[dict[str, object]]] = []
    answers = [503, 503]  # the webhook fails twice, then accepts

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the base class's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = answers.pop(0) if answers else 200
            if status == 200:
                received.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    down = free_port()  # nothing listens there: a sink that is down
    extra = (f"audit:\n  forward:\n    - {{url: 'syslog+udp://127.0.0.1:{udp.getsockname()[1]}'}}\n"
             f"    - {{url: 'http://127.0.0.1:{hook.server_address[1]}/audit', headers: {{X-Token: hook-secret}}}}\n"
             f"    - {{url: 'http://127.0.0.1:{down}/audit'}}\n")
    app = start_appliance(tmp_path_factory.mktemp("audit-forward"), f"  - hosts: [f.test]\n    upstream: {upstream_a.url}\n"
                          "    waf: {mode: block}\n", extra, state_dir=copy_state(crs_state))
    try:
        resp = get(app, "f.test", "/?q=1%27%20or%201%3D1--", headers={"Authorization": "Bearer fwd-secret-value"})
        assert resp.status_code == 403
        rid = resp.headers["x-request-id"]
        message, _ = udp.recvfrom(65536)
        assert message.startswith(b"<132>1 ") and b" edgeward - audit - " in message
        summary = json.loads(message.split(b" - audit - ", 1)[1])
        assert summary["id"] == rid and 942100 in summary["rules"] and summary["status"] == 403
        deadline = time.monotonic() + 15
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert received and received[0][0]["id"] == rid and not answers  # delivered on the third try
        assert b"fwd-secret-value" not in message and "fwd-secret-value" not in json.dumps(received)
        # the sink that is down slows nothing: every later blocked request is answered and recorded
        ids = [get(app, "f.test", f"/x{i}?q=1%27%20or%201%3D1--").headers["x-request-id"] for i in range(20)]
        assert record(app, ids[-1])["status"] == 403
    finally:
        stop(app.proc)
        hook.shutdown()
        hook.server_close()
        udp.close()


def test_a_forward_url_with_an_unknown_scheme_is_a_config_error(tmp_path: Path, upstream_a: Upstream) -> None:
    from ..harness import appliance_config, free_port

    config = tmp_path / "edgeward.yaml"
    config.write_text(appliance_config(tmp_path, free_port(), free_port(), f"  - hosts: [a.test]\n    upstream: {upstream_a.url}\n",
                                       "audit: {forward: [{url: 'ftp://127.0.0.1/x'}]}\n"))
    out = subprocess.run([EDGEWARD, "check", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "audit.forward" in out.stderr and "syslog+udp" in out.stderr


def test_an_exclusion_made_from_a_record_lets_that_request_through_and_nothing_more(
        tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream, crs_state: Path) -> None:
    app = start_appliance(tmp_path_factory.mktemp("audit-exclude"), f"  - hosts: [x.test]\n    upstream: {upstream_a.url}\n"
                          "    waf: {mode: block}\n", state_dir=copy_state(crs_state))
    try:
        attack = "/search?q=1%27%20or%201%3D1--"
        rid = get(app, "x.test", attack).headers["x-request-id"]
        record(app, rid)
        dry = cli(app, "exclude", rid, "--reason", "the search box takes SQL on purpose")
        assert dry.returncode == 0 and "+   rules: [942100]" in dry.stdout and "target: ARGS:q" in dry.stdout
        assert "path: /search" in dry.stdout and "dry run" in dry.stdout
        assert get(app, "x.test", attack).status_code == 403  # a dry run changes nothing
        bad = cli(app, "exclude", rid, "--rule", "941100", "--reason", "no")
        assert bad.returncode == 2 and "did not match" in bad.stderr
        api = httpx.post(app.admin + f"/api/audit/{rid}/exclusion", json={"reason": "api dry run"}, headers=AUTH).json()
        assert api["applied"] is False and api["exclusion"]["rules"] == [942100] and api["exclusion"]["target"] == "ARGS:q"
        assert httpx.post(app.admin + f"/api/audit/{rid}/exclusion", json={}, headers=AUTH).status_code == 422
        assert httpx.post(app.admin + "/api/audit/nope/exclusion", json={"reason": "x"}, headers=AUTH).status_code == 404
        applied = cli(app, "exclude", rid, "--reason", "the search box takes SQL on purpose", "--expires", "30d", "--apply")
        assert applied.returncode == 0, applied.stderr
        deadline = time.monotonic() + 10
        while get(app, "x.test", attack).status_code != 200:
            assert time.monotonic() < deadline, "the exclusion never took effect"
            time.sleep(0.2)
        assert get(app, "x.test", "/other?q=1%27%20or%201%3D1--").status_code == 403  # another path
        assert get(app, "x.test", "/search?x=1%27%20or%201%3D1--").status_code == 403  # another argument
        assert get(app, "x.test", attack, method="POST").status_code == 403  # another method
        # its hit counter: the requests it applied to (its path, method and target), in audit stats
        for _ in range(3):
            assert get(app, "x.test", "/search?q=plain").status_code == 200
        get(app, "x.test", "/search?other=1")  # no ARGS:q: not counted
        name = json.loads(applied.stdout.split("+ - name: ", 1)[1].split("\n", 1)[0].join('""'))
        deadline = time.monotonic() + 10
        while True:
            stats = json.loads(cli(app, "stats", "--json").stdout)
            entry = next(e for e in stats["exclusions"] if e["name"] == name)
            if entry["hits"] >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert entry["hits"] == 4 and entry["reason"] == "the search box takes SQL on purpose"  # the attack once and 3 plain
        assert entry["expires"] > time.time() + 29 * 86400 and not entry["expired"]
        assert "exclusions (hits" in cli(app, "stats").stdout and name in cli(app, "stats").stdout
        api = httpx.get(app.admin + "/api/audit/stats", headers=AUTH).json()
        assert any(e["name"] == name and e["hits"] == 4 for e in api["exclusions"])
    finally:
        stop(app.proc)


def test_expired_managed_exclusions_are_left_out(tmp_path: Path) -> None:
    from appliance.config.schema import DomainConfig
    from appliance.exclusions import add, for_domain

    domain = DomainConfig.model_validate({"hosts": ["a.test", "b.test"], "upstream": "http://127.0.0.1:9"})
    base = {"rules": [942100], "target": "ARGS:q", "path": "/s", "methods": ["GET"], "reason": "r", "author": "t",
            "created": 0.0, "from_record": "x"}
    add(tmp_path, {**base, "domain": "b.test", "expires": None})
    add(tmp_path, {**base, "domain": "a.test", "expires": 100.0, "rules": [941100]})
    add(tmp_path, {**base, "domain": "other.test", "expires": None})
    assert [e.rules for e in for_domain(tmp_path, domain, now=50.0)] == [(942100,), (941100,)]
    assert [e.rules for e in for_domain(tmp_path, domain, now=150.0)] == [(942100,)]


def test_two_nodes_share_one_postgresql_store(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream,
                                              crs_state: Path, postgres: object) -> None:
    """Two appliances (two nodes) write to one PostgreSQL database; either one's CLI and admin
    API see both nodes' records. The password comes from the environment and is never logged."""
    from ..servers.postgres import PASSWORD

    url = postgres.create_database("nodes").replace(PASSWORD, "${AUDIT_DB_PASSWORD}")  # type: ignore[attr-defined]
    extra = f"audit: {{store: '{url}'}}\n"
    env = {"AUDIT_DB_PASSWORD": PASSWORD}
    domains = f"  - hosts: [pg.test]\n    upstream: {upstream_a.url}\n    waf: {{mode: block}}\n"
    nodes = [start_appliance(tmp_path_factory.mktemp(f"audit-pg{i}"), domains, extra, env, state_dir=copy_state(crs_state))
             for i in range(2)]
    try:
        rids = [get(node, "pg.test", f"/n{i}?q=1%27%20or%201%3D1--").headers["x-request-id"] for i, node in enumerate(nodes)]

        def search(node: Appliance) -> list[str]:
            out = subprocess.run([EDGEWARD, "audit", "search", "--domain", "pg.test", "--tag", "attack-sqli", "--json",
                                  "-c", str(node.config)], capture_output=True, text=True, timeout=30, env=node.env)
            assert out.returncode == 0, out.stderr
            return [json.loads(line)["id"] for line in out.stdout.splitlines()]

        deadline = time.monotonic() + 10
        while set(search(nodes[0])) != set(rids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(search(nodes[0])) == set(search(nodes[1])) == set(rids)
        api = httpx.get(nodes[1].admin + "/api/audit", params={"rule": 942100}, headers=AUTH).json()
        assert {r["id"] for r in api["records"]} == set(rids) and {r["node"] for r in api["records"]}
        assert httpx.get(nodes[0].admin + "/readyz").status_code == 200
        for node in nodes:
            assert PASSWORD not in node.logs()
    finally:
        for node in nodes:
            stop(node.proc)


def test_an_unreachable_postgresql_store_stops_the_start_without_its_password(tmp_path: Path, upstream_a: Upstream) -> None:
    from ..harness import appliance_config, free_port

    config = tmp_path / "edgeward.yaml"
    config.write_text(appliance_config(tmp_path, free_port(), free_port(), f"  - hosts: [a.test]\n    upstream: {upstream_a.url}\n",
                                       f"audit: {{store: 'postgresql://edgeward:s3cret-pw@127.0.0.1:{free_port()}/audit'}}\n"))
    out = subprocess.run([EDGEWARD, "serve", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "127.0.0.1" in out.stderr and "edgeward:***@" in out.stderr and "s3cret-pw" not in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("postgresql://edgeward:s3cret-pw@", "mysql://edgeward:s3cret-pw@"))
    checked = subprocess.run([EDGEWARD, "check", "-c", str(bad)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 2 and "audit.store" in checked.stderr and "s3cret-pw" not in checked.stderr
