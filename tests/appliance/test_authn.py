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
    started = time.monotonic()
    for _ in range(5):  # a success is remembered: scrypt is paid once, not per request
        assert call(app, "/", Authorization=basic("alice", ALICE_PASSWORD)).status_code == 200
    assert time.monotonic() - started < 2


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
    assert record["stage"] == "authn" and record["reason"] == "authn.forbidden" and record["consumer"] == "bob"
    assert BOB_KEY not in out.stdout and ["apikey", "[redacted]"] in record["headers"]
    wrong = call(app, "/", apikey="guessed-key-123")
    deadline = time.monotonic() + 10
    while subprocess.run([EDGEWARD, "audit", "show", wrong.headers["x-request-id"], "-c", str(app.config)],
                         capture_output=True, timeout=30).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    found = subprocess.run([EDGEWARD, "audit", "search", "--stage", "authn", "--json", "-c", str(app.config)],
                           capture_output=True, text=True, timeout=30).stdout
    assert "authn.unauthenticated" in found and "guessed-key-123" not in found


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
