"""Authentication (tests/appliance/test_authn.py for appliance/stages/authn.py and authn/): consumers
with key and basic credentials over HTTP, what the upstream sees, and what the audit log keeps."""
from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from authn.consumers import hash_key, hash_password

from ..harness import EDGEWARD, Appliance, Upstream, appliance_config, free_port, start_appliance, stop

ALICE_KEY, ALICE_NEXT_KEY, BOB_KEY, OLD_KEY = "alice-key-7Yq2", "alice-next-key-P0o9", "bob-key-3Zx8", "old-key-expired"
ALICE_PASSWORD = "correct horse battery"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream) -> Iterator[Appliance]:
    extra = f"""\
consumers:
  - name: alice
    groups: [staff]
    credentials:
      - {{type: key, sha256: {hash_key(ALICE_KEY)}}}
      - {{type: key, sha256: {hash_key(ALICE_NEXT_KEY)}}}
      - {{type: basic, username: alice, scrypt: "{hash_password(ALICE_PASSWORD)}"}}
  - name: bob
    credentials:
      - {{type: key, sha256: {hash_key(BOB_KEY)}}}
      - {{type: key, sha256: {hash_key(OLD_KEY)}, expires: 2020-01-01T00:00:00Z}}
  - name: guest
"""
    domains = f"""\
  - hosts: [api.test]
    upstream: {upstream_a.url}
    waf: {{mode: off}}
    auth: {{methods: [key, basic], key: {{query: apikey, bearer: true}}}}
    routes:
      - path: /staff
        auth: {{allow: [staff]}}
      - path: /healthz
        auth: off
      - path: /public
        auth: {{anonymous: guest}}
      - path: /raw
        auth: {{hide_credentials: false}}
"""
    appliance = start_appliance(tmp_path_factory.mktemp("authn"), domains, extra)
    yield appliance
    stop(appliance.proc)


def call(app: Appliance, path: str = "/", **headers: str) -> httpx.Response:
    return httpx.get(app.url + path, headers={"Host": "api.test", **headers}, timeout=10)


def upstream_saw(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 200, resp.text
    return {k.lower(): v for k, v in resp.json()["headers"]}


def test_keys_in_a_header_a_query_or_a_bearer_token_name_the_consumer(app: Appliance) -> None:
    seen = upstream_saw(call(app, "/", apikey=ALICE_KEY))
    assert seen["x-consumer-username"] == "alice" and seen["x-consumer-groups"] == "staff"
    assert seen["x-credential-identifier"] == "key:" + hash_key(ALICE_KEY)[:12]
    assert "apikey" not in seen  # hide_credentials (the default)
    assert upstream_saw(call(app, "/", apikey=ALICE_NEXT_KEY))["x-consumer-username"] == "alice"  # rotation: both work
    by_query = call(app, f"/q?apikey={BOB_KEY}&page=2")
    assert by_query.json()["path"] == "/q?page=2" and upstream_saw(by_query)["x-consumer-username"] == "bob"
    assert upstream_saw(call(app, "/", Authorization=f"Bearer {BOB_KEY}"))["x-consumer-username"] == "bob"


def test_missing_wrong_expired_or_conflicting_keys_get_the_same_401(app: Appliance) -> None:
    answers = [call(app, "/"), call(app, "/", apikey="nope"), call(app, "/", apikey=OLD_KEY),
               call(app, f"/?apikey={BOB_KEY}", apikey=ALICE_KEY)]  # two different keys
    for resp in answers:
        assert resp.status_code == 401 and resp.headers["x-request-id"]
        assert resp.headers.get_list("www-authenticate") == ['Key realm="edgeward"', 'Basic realm="edgeward", charset="UTF-8"']
    assert len({r.text.replace(r.headers["x-request-id"], "ID") for r in answers}) == 1  # never says which part was wrong


def test_basic_auth_and_a_wrong_password(app: Appliance) -> None:
    seen = upstream_saw(call(app, "/", Authorization=basic("alice", ALICE_PASSWORD)))
    assert seen["x-consumer-username"] == "alice" and seen["x-credential-identifier"] == "basic:alice"
    assert "authorization" not in seen
    assert call(app, "/", Authorization=basic("alice", "wrong password")).status_code == 401
    assert call(app, "/", Authorization=basic("mallory", ALICE_PASSWORD)).status_code == 401
    assert call(app, "/", Authorization="Basic !!!not-base64").status_code == 401
    for _ in range(5):  # a success is remembered (scrypt paid once); the answers stay the same
        assert call(app, "/", Authorization=basic("alice", ALICE_PASSWORD)).status_code == 200


def test_allow_lists_anonymous_routes_and_auth_off(app: Appliance) -> None:
    assert upstream_saw(call(app, "/staff", apikey=ALICE_KEY))["x-consumer-username"] == "alice"
    forbidden = call(app, "/staff", apikey=BOB_KEY)
    assert forbidden.status_code == 403
    assert call(app, "/staff").status_code == 401
    assert "x-consumer-username" not in upstream_saw(call(app, "/healthz"))
    assert upstream_saw(call(app, "/public"))["x-consumer-username"] == "guest"
    assert upstream_saw(call(app, "/public", apikey=BOB_KEY))["x-consumer-username"] == "bob"
    assert upstream_saw(call(app, "/raw", apikey=BOB_KEY))["apikey"] == BOB_KEY  # hide_credentials: false


def test_identity_headers_from_the_client_never_reach_the_upstream(app: Appliance) -> None:
    forged = {"X-Consumer-Username": "admin", "X-Consumer-Groups": "root", "X-Credential-Identifier": "key:forged"}
    seen = upstream_saw(call(app, "/healthz", **forged))  # auth off: nothing of the client's copy survives
    assert not {"x-consumer-username", "x-consumer-groups", "x-credential-identifier"} & set(seen)
    seen = upstream_saw(call(app, "/", apikey=BOB_KEY, **forged))
    assert seen["x-consumer-username"] == "bob" and seen["x-consumer-groups"] == ""


def test_failures_are_audit_records_without_the_credential(app: Appliance) -> None:
    resp = call(app, "/staff", apikey=BOB_KEY)
    rid = resp.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run([EDGEWARD, "audit", "show", rid, "--json", "-c", str(app.config)],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    record = json.loads(out.stdout)
    assert record["stage"] == "auth" and record["reason"] == "auth.forbidden" and record["consumer"] == "bob"
    assert BOB_KEY not in out.stdout and ["apikey", "[redacted]"] in record["headers"]
    wrong = call(app, "/", apikey="guessed-key-123")
    deadline = time.monotonic() + 10
    while subprocess.run([EDGEWARD, "audit", "show", wrong.headers["x-request-id"], "-c", str(app.config)],
                         capture_output=True, timeout=30).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    found = subprocess.run([EDGEWARD, "audit", "search", "--stage", "auth", "--json", "-c", str(app.config)],
                           capture_output=True, text=True, timeout=30).stdout
    assert "auth.unauthenticated" in found and "guessed-key-123" not in found


def test_consumer_config_errors(tmp_path: Path, upstream_a: Upstream) -> None:
    cases = (
        ("consumers: [{name: a}, {name: a}]\n", "", "declared twice"),
        ("consumers: [{name: a, credentials: [{type: key, sha256: nothex}]}]\n", "", "sha256"),
        ("consumers: [{name: a, credentials: [{type: basic, username: a, scrypt: plain}]}]\n", "", "scrypt"),
        ("consumers: [{name: a}]\n", "    auth: {methods: [key], allow: [nobody]}\n", "no consumer or group 'nobody'"),
        ("", "    auth: {methods: [key], anonymous: ghost}\n", "no consumer 'ghost'"),
        ("", "    auth: {methods: [password]}\n", "methods"),
        ("", "    auth: {}\n", "needs methods"),
    )
    for extra, auth, words in cases:
        config = tmp_path / "edgeward.yaml"
        config.write_text(appliance_config(tmp_path, free_port(), free_port(),
                                           f"  - hosts: [a.test]\n    upstream: {upstream_a.url}\n{auth}", extra))
        out = subprocess.run([EDGEWARD, "check", "-c", str(config)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and words in out.stderr, (extra, auth, out.stderr)


def test_the_hash_commands_make_what_the_config_stores() -> None:
    out = subprocess.run([EDGEWARD, "consumer", "hash-key", "my-key"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and hash_key("my-key") in out.stdout and "my-key" not in out.stdout.split("sha256:")[1]
    fresh = subprocess.run([EDGEWARD, "consumer", "hash-key"], capture_output=True, text=True, timeout=30).stdout
    key = fresh.split("key:", 1)[1].split()[0]
    assert hash_key(key) in fresh and len(key) >= 40
    hashed = subprocess.run([EDGEWARD, "consumer", "hash-password"], input="a long password\n",
                            capture_output=True, text=True, timeout=30)
    from authn.consumers import check_password

    assert hashed.returncode == 0 and check_password(b"a long password", hashed.stdout.strip())
    assert not check_password(b"another password", hashed.stdout.strip())
    short = subprocess.run([EDGEWARD, "consumer", "hash-password"], input="short\n", capture_output=True, text=True, timeout=30)
    assert short.returncode == 2


def test_cc_rules_keyed_by_consumer_run_after_authentication(tmp_path: Path, upstream_a: Upstream, redis_server: object) -> None:
    extra = (f"redis: {redis_server.url}\n"  # type: ignore[attr-defined]
             f"consumers:\n  - name: alice\n    credentials: [{{type: key, sha256: {hash_key(ALICE_KEY)}}}]\n"
             f"  - name: bob\n    credentials: [{{type: key, sha256: {hash_key(BOB_KEY)}}}]\n")
    domains = (f"  - hosts: [api.test]\n    upstream: {upstream_a.url}\n    waf: {{mode: off}}\n"
               "    auth: {methods: [key]}\n"
               "    cc: [{name: per-consumer, key: consumer, limit: 3/minute}, {name: per-ip, key: ip, limit: 100/minute}]\n")
    app = start_appliance(tmp_path, domains, extra)
    try:
        assert [call(app, "/", apikey=ALICE_KEY).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert [call(app, "/", apikey=BOB_KEY).status_code for _ in range(3)] == [200, 200, 200]  # same address, own count
        limited = call(app, "/", apikey=ALICE_KEY)
        assert limited.status_code == 429 and limited.headers["ratelimit-policy"].startswith('"per-consumer"')
        assert call(app, "/").status_code == 401  # no consumer: authentication refuses first
    finally:
        stop(app.proc)


def test_managed_consumers_from_the_cli_and_the_admin_api(tmp_path: Path, upstream_a: Upstream) -> None:
    extra = f"consumers:\n  - name: alice\n    credentials: [{{type: key, sha256: {hash_key(ALICE_KEY)}}}]\n"
    domains = f"  - hosts: [api.test]\n    upstream: {upstream_a.url}\n    waf: {{mode: off}}\n    auth: {{methods: [key, basic]}}\n"
    app = start_appliance(tmp_path, domains, extra)

    def consumer(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([EDGEWARD, "consumer", *args, "-c", str(app.config)], input=stdin, capture_output=True,
                              text=True, timeout=30)

    def works(key: str, deadline: float = 10) -> bool:
        end = time.monotonic() + deadline
        while time.monotonic() < end:  # the workers reload within a second
            if call(app, "/", apikey=key).status_code == 200:
                return True
            time.sleep(0.2)
        return False

    try:
        added = consumer("add", "dave", "--group", "ops", "--basic", "dave", stdin="dave's long password\n")
        assert added.returncode == 0, added.stderr
        key = added.stdout.split("key: ", 1)[1].split()[0]
        assert works(key) and upstream_saw(call(app, "/", apikey=key))["x-consumer-groups"] == "ops"
        assert call(app, "/", Authorization=basic("dave", "dave's long password")).status_code == 200
        stored = (tmp_path / "state" / "consumers.json").read_text()
        assert key not in stored and "dave's long password" not in stored
        listed = [json.loads(line) for line in consumer("list", "--json").stdout.splitlines()]
        assert {c["name"]: c["source"] for c in listed} == {"alice": "config", "dave": "managed"}
        assert consumer("add", "alice").returncode != 0  # the config file's consumer
        assert consumer("add", "bad name!").returncode != 0 and "Traceback" not in consumer("add", "bad name!").stderr
        rotated = consumer("rotate", "dave", "--grace", "2s")
        new_key = rotated.stdout.split("new key for dave: ", 1)[1].split()[0]
        assert works(new_key) and call(app, "/", apikey=key).status_code == 200  # both during the grace
        deadline = time.monotonic() + 10
        while call(app, "/", apikey=key).status_code != 401:  # the grace ends
            assert time.monotonic() < deadline, "the old key never expired"
            time.sleep(0.2)
        assert call(app, "/", apikey=new_key).status_code == 200
        assert consumer("remove", "dave").returncode == 0
        deadline = time.monotonic() + 10
        while call(app, "/", apikey=new_key).status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        auth = {"Authorization": "Bearer test-admin-token"}
        assert httpx.get(app.admin + "/api/consumers").status_code == 401
        made = httpx.post(app.admin + "/api/consumers", json={"name": "erin", "groups": ["ops"]}, headers=auth)
        assert made.status_code == 201 and works(made.json()["key"])
        assert httpx.post(app.admin + "/api/consumers", json={"name": "erin"}, headers=auth).status_code == 409
        assert httpx.post(app.admin + "/api/consumers", json={"nope": 1}, headers=auth).status_code == 400
        names = [c["name"] for c in httpx.get(app.admin + "/api/consumers", headers=auth).json()["consumers"]]
        assert names == ["alice", "erin"]
        turned = httpx.post(app.admin + "/api/consumers/erin/rotate", json={"grace": "1h"}, headers=auth)
        assert turned.status_code == 200 and works(turned.json()["key"]) and works(made.json()["key"])
        assert httpx.delete(app.admin + "/api/consumers/erin", headers=auth).status_code == 200
        assert httpx.delete(app.admin + "/api/consumers/erin", headers=auth).status_code == 404
    finally:
        stop(app.proc)


def test_identity_header_names_are_configurable(tmp_path: Path, upstream_a: Upstream) -> None:
    extra = (f"identity_headers: {{username: X-User, groups: X-Roles, credential: X-Cred}}\n"
             f"consumers:\n  - name: alice\n    groups: [staff]\n    credentials: [{{type: key, sha256: {hash_key(ALICE_KEY)}}}]\n")
    app = start_appliance(tmp_path, f"  - hosts: [api.test]\n    upstream: {upstream_a.url}\n    waf: {{mode: off}}\n"
                          "    auth: {methods: [key]}\n", extra)
    try:
        seen = upstream_saw(call(app, "/", apikey=ALICE_KEY, **{"X-User": "forged", "X-Roles": "root"}))
        assert seen["x-user"] == "alice" and seen["x-roles"] == "staff" and seen["x-cred"].startswith("key:")
        assert "x-consumer-username" not in seen
    finally:
        stop(app.proc)
