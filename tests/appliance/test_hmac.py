"""HMAC signatures (tests/appliance/test_hmac.py for authn/hmacauth.py): the APISIX 3.11+ wire
format, signed by a client written from APISIX's documentation, and where Edgeward is stricter."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

from ..harness import Appliance, Upstream, start_appliance, stop

SECRET = "alice-hmac-secret-0123456789"


def sign(method: str, target: str, key_id: str = "alice-key", secret: str = SECRET, headers: tuple[str, ...] = (
        "@request-target", "date"), date: str | None = None, extra: dict[str, str] | None = None,
         algorithm: str = "hmac-sha256", body: bytes | None = None) -> dict[str, str]:
    """The client side, as APISIX's documentation builds it: the key id, then one line per signed
    header (``@request-target`` as ``METHOD TARGET``), each ending with a newline."""
    values = {"date": date or formatdate(usegmt=True), **{k.lower(): v for k, v in (extra or {}).items()}}
    if body is not None:
        values["digest"] = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    lines = [key_id] + [f"{method} {target}" if h == "@request-target" else f"{h}: {values[h]}" for h in headers]
    digest = {"hmac-sha256": hashlib.sha256, "hmac-sha512": hashlib.sha512}[algorithm]
    signature = base64.b64encode(hmac.new(secret.encode(), ("\n".join(lines) + "\n").encode(), digest).digest()).decode()
    out = {"Date": values["date"], **(extra or {}),
           "Authorization": f'Signature keyId="{key_id}",algorithm="{algorithm}",headers="{" ".join(headers)}",'
                            f'signature="{signature}"'}
    if body is not None:
        out["Digest"] = values["digest"]
    return out


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream) -> Iterator[Appliance]:
    tmp = tmp_path_factory.mktemp("hmac")
    secret_file = tmp / "bob.secret"
    secret_file.write_text("bob-secret-from-a-file-42\n")
    os.chmod(secret_file, 0o600)
    extra = f"""\
consumers:
  - name: alice
    credentials: [{{type: hmac, key_id: alice-key, secret_env: ALICE_HMAC_SECRET}}]
  - name: bob
    credentials: [{{type: hmac, key_id: bob-key, secret_file: {secret_file}}}]
"""
    domains = f"""\
  - hosts: [hmac.test]
    upstream: {upstream_a.url}
    waf: {{mode: off}}
    auth: {{methods: [hmac]}}
    routes:
      - path: /orders
        auth: {{hmac: {{validate_body: true, signed_headers: [x-tenant]}}}}
"""
    appliance = start_appliance(tmp, domains, extra, env={"ALICE_HMAC_SECRET": SECRET})
    yield appliance
    stop(appliance.proc)


def call(app: Appliance, method: str, target: str, headers: dict[str, str], body: bytes | None = None) -> httpx.Response:
    return httpx.request(method, app.url + target, headers={"Host": "hmac.test", **headers}, content=body, timeout=10)


def test_a_signed_request_names_its_consumer(app: Appliance) -> None:
    resp = call(app, "GET", "/items?page=2", sign("GET", "/items?page=2"))
    assert resp.status_code == 200, resp.text
    seen = {k.lower(): v for k, v in resp.json()["headers"]}
    assert seen["x-consumer-username"] == "alice" and seen["x-credential-identifier"] == "hmac:alice-key"
    assert "authorization" not in seen
    bob = call(app, "GET", "/", sign("GET", "/", "bob-key", "bob-secret-from-a-file-42", algorithm="hmac-sha512"))
    assert bob.status_code == 200


def test_what_apisix_lets_through_edgeward_refuses(app: Appliance) -> None:
    old = formatdate(time.time() - 600, usegmt=True)
    cases = {
        "the method and URI unsigned": sign("GET", "/a", headers=("date",)),
        "the date unsigned": sign("GET", "/a", headers=("@request-target",)),
        "a listed header absent": {k: v for k, v in sign("GET", "/a", headers=("@request-target", "date", "x-tenant"),
                                                          extra={"X-Tenant": "t1"}).items() if k != "X-Tenant"},
        "a date outside the clock skew": sign("GET", "/a", date=old),
        "another target than the one signed": sign("GET", "/b"),
        "a wrong secret": sign("GET", "/a", secret="guess"),
        "an unknown key id": sign("GET", "/a", key_id="mallory"),
        "a weak algorithm": sign("GET", "/a", algorithm="hmac-sha256") | {"Authorization": sign("GET", "/a")[
            "Authorization"].replace("hmac-sha256", "hmac-sha1")},
    }
    for why, headers in cases.items():
        resp = call(app, "GET", "/a", headers)
        assert resp.status_code == 401, why
        assert resp.headers["www-authenticate"].startswith("Signature")


def test_a_replayed_signature_is_refused_within_the_window(app: Appliance) -> None:
    headers = sign("GET", "/replay")
    assert call(app, "GET", "/replay", headers).status_code == 200
    assert call(app, "GET", "/replay", headers).status_code == 401  # the same signature again, on any worker


def test_body_validation_needs_a_signed_digest_that_matches(app: Appliance) -> None:
    body = b'{"item": 42}'
    good = sign("POST", "/orders", headers=("@request-target", "date", "x-tenant", "digest"), extra={"X-Tenant": "t1"},
                body=body)
    assert call(app, "POST", "/orders", good, body).status_code == 200
    tampered = sign("POST", "/orders", headers=("@request-target", "date", "x-tenant", "digest"),
                    extra={"X-Tenant": "t1"}, body=body)
    assert call(app, "POST", "/orders", tampered, b'{"item": 43}').status_code == 401  # the body changed on the way
    unsigned_digest = sign("POST", "/orders", headers=("@request-target", "date", "x-tenant"), extra={"X-Tenant": "t1"},
                           body=body)
    assert call(app, "POST", "/orders", unsigned_digest, body).status_code == 401  # Digest present but not signed
    no_tenant = sign("POST", "/orders", headers=("@request-target", "date", "digest"), body=body)
    assert call(app, "POST", "/orders", no_tenant, body).status_code == 401  # a required header unsigned


def test_a_secret_file_readable_by_others_is_a_config_error(tmp_path: Path, upstream_a: Upstream) -> None:
    import subprocess

    from ..harness import EDGEWARD, appliance_config, free_port

    secret = tmp_path / "open.secret"
    secret.write_text("s3cret")
    os.chmod(secret, 0o644)
    config = tmp_path / "edgeward.yaml"
    config.write_text(appliance_config(
        tmp_path, free_port(), free_port(), f"  - hosts: [a.test]\n    upstream: {upstream_a.url}\n    auth: {{methods: [hmac]}}\n",
        f"consumers: [{{name: a, credentials: [{{type: hmac, key_id: k, secret_file: {secret}}}]}}]\n"))
    out = subprocess.run([EDGEWARD, "check", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "readable by others" in out.stderr and "s3cret" not in out.stderr


def xca_sign(method: str, path: str, query: dict[str, str] | None = None, form: dict[str, str] | None = None,
             key: str = "alice-key", secret: str = SECRET, signed: tuple[str, ...] = ("x-ca-key", "x-ca-nonce", "x-ca-timestamp"),
             nonce: str | None = None, stamp: float | None = None, body: bytes | None = None,
             content_type: str | None = None) -> dict[str, str]:
    """The client side of the X-Ca scheme as Alibaba Cloud's API gateway SDKs build it."""
    import uuid

    headers = {"Accept": "application/json", "X-Ca-Key": key, "X-Ca-Nonce": nonce or str(uuid.uuid4()),
               "X-Ca-Timestamp": str(int((stamp or time.time()) * 1000)), "X-Ca-Signature-Method": "HmacSHA256"}
    if content_type:
        headers["Content-Type"] = content_type
    if body:
        headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    text = "\n".join([method, headers["Accept"], headers.get("Content-MD5", ""), headers.get("Content-Type", ""), ""]) + "\n"
    lower = {k.lower(): v for k, v in headers.items()}
    for name in sorted(signed):
        text += f"{name}:{lower[name]}\n"
    params = {**(query or {}), **(form or {})}
    text += path + ("?" + "&".join(f"{k}={params[k]}" if params[k] else k for k in sorted(params)) if params else "")
    headers["X-Ca-Signature"] = base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()).decode()
    headers["X-Ca-Signature-Headers"] = ",".join(signed)
    return headers


@pytest.fixture(scope="module")
def xca(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream) -> Iterator[Appliance]:
    extra = "consumers:\n  - name: alice\n    credentials: [{type: hmac, key_id: alice-key, secret_env: ALICE_HMAC_SECRET}]\n"
    domains = (f"  - hosts: [hmac.test]\n    upstream: {upstream_a.url}\n    waf: {{mode: off}}\n"
               "    auth: {methods: [hmac], hmac: {format: higress, validate_body: true}}\n"
               "    routes:\n      - path: /compat\n        auth: {hmac: {format: higress, failure_status: 400}}\n")
    appliance = start_appliance(tmp_path_factory.mktemp("xca"), domains, extra, env={"ALICE_HMAC_SECRET": SECRET})
    yield appliance
    stop(appliance.proc)


def test_the_x_ca_scheme_signs_path_query_and_form_fields(xca: Appliance) -> None:
    from urllib.parse import urlencode

    got = call(xca, "GET", "/items?b=2&a=1", xca_sign("GET", "/items", {"b": "2", "a": "1"}))
    assert got.status_code == 200, got.text
    assert {k.lower(): v for k, v in got.json()["headers"]}["x-consumer-username"] == "alice"
    form = {"qty": "3", "item": "42"}
    body = urlencode(form).encode()
    signed = xca_sign("POST", "/orders", form=form, body=body, content_type="application/x-www-form-urlencoded")
    assert call(xca, "POST", "/orders", signed, body).status_code == 200
    forged = xca_sign("POST", "/orders", form=form, body=body, content_type="application/x-www-form-urlencoded")
    other = urlencode({"qty": "300", "item": "42"}).encode()
    forged["Content-MD5"] = base64.b64encode(hashlib.md5(other).digest()).decode()
    assert call(xca, "POST", "/orders", forged, other).status_code == 401  # a changed form field breaks the signature


def test_what_higress_lets_through_the_x_ca_scheme_refuses(xca: Appliance) -> None:
    nonce = "n-0001"
    first = xca_sign("GET", "/once", nonce=nonce)
    assert call(xca, "GET", "/once", first).status_code == 200
    assert call(xca, "GET", "/once", xca_sign("GET", "/once", nonce=nonce)).status_code == 401  # a nonce is used once
    assert call(xca, "GET", "/a", xca_sign("GET", "/a", signed=("x-ca-key", "x-ca-timestamp"))).status_code == 401
    assert call(xca, "GET", "/a", xca_sign("GET", "/a", stamp=time.time() - 3600)).status_code == 401
    body = b'{"item": 42}'
    json_req = xca_sign("POST", "/j", body=body, content_type="application/json")
    assert call(xca, "POST", "/j", json_req, body).status_code == 200
    assert call(xca, "POST", "/j", xca_sign("POST", "/j", body=body, content_type="application/json"),
                b'{"item": 43}').status_code == 401  # Content-MD5 no longer matches
    no_md5 = xca_sign("POST", "/j", content_type="application/json")
    assert call(xca, "POST", "/j", no_md5, body).status_code == 401  # a body without Content-MD5 (validate_body)
    assert call(xca, "GET", "/compat", xca_sign("GET", "/compat", secret="guess")).status_code == 400  # Higress's status
    assert call(xca, "GET", "/compat", xca_sign("GET", "/compat")).status_code == 200
    empty_form = xca_sign("POST", "/f", content_type="application/x-www-form-urlencoded", key="mallory")
    assert call(xca, "POST", "/f", empty_form, b"").status_code == 401  # a form without a body is still checked


def rfc9421_sign(method: str, target: str, covered: tuple[str, ...] = ("@method", "@authority", "@path", "@query"),
                 created: float | None = None, key: str = "alice-key", secret: str = SECRET, body: bytes | None = None,
                 label: str = "sig1") -> dict[str, str]:
    """A client of RFC 9421 section 2.5 (the signature base) and RFC 9530 (Content-Digest)."""
    path, _, query = target.partition("?")
    values = {"@method": method, "@authority": "hmac.test", "@path": path, "@query": "?" + query,
              "@target-uri": f"http://hmac.test{target}", "date": formatdate(usegmt=True)}
    headers = {"Date": values["date"]}
    if body is not None:
        values["content-digest"] = headers["Content-Digest"] = \
            "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    params = "(" + " ".join(f'"{c}"' for c in covered) + f');created={int(created or time.time())};keyid="{key}";alg="hmac-sha256"'
    base = "\n".join([f'"{c}": {values[c]}' for c in covered] + [f'"@signature-params": {params}'])
    mac = base64.b64encode(hmac.new(secret.encode(), base.encode(), hashlib.sha256).digest()).decode()
    return {**headers, "Signature-Input": f"{label}={params}", "Signature": f"{label}=:{mac}:"}


@pytest.fixture(scope="module")
def rfc(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream) -> Iterator[Appliance]:
    extra = "consumers:\n  - name: alice\n    credentials: [{type: hmac, key_id: alice-key, secret_env: ALICE_HMAC_SECRET}]\n"
    domains = (f"  - hosts: [hmac.test]\n    upstream: {upstream_a.url}\n    waf: {{mode: off}}\n"
               "    auth: {methods: [hmac], hmac: {format: rfc9421}}\n"
               "    routes:\n      - path: /orders\n        auth: {hmac: {format: rfc9421, validate_body: true}}\n")
    appliance = start_appliance(tmp_path_factory.mktemp("rfc9421"), domains, extra, env={"ALICE_HMAC_SECRET": SECRET})
    yield appliance
    stop(appliance.proc)


def test_rfc_9421_message_signatures(rfc: Appliance) -> None:
    ok = call(rfc, "GET", "/items?page=2", rfc9421_sign("GET", "/items?page=2"))
    assert ok.status_code == 200, ok.text
    assert {k.lower(): v for k, v in ok.json()["headers"]}["x-credential-identifier"] == "hmac:alice-key"
    assert call(rfc, "GET", "/x", rfc9421_sign("GET", "/x", ("@method", "@target-uri"))).status_code == 200
    body = b'{"item": 42}'
    signed = rfc9421_sign("POST", "/orders", ("@method", "@path", "@query", "content-digest"), body=body)
    assert call(rfc, "POST", "/orders", signed, body).status_code == 200
    refused = {
        "no @method": rfc9421_sign("GET", "/a", ("@authority", "@path", "@query")),
        "the query unsigned": rfc9421_sign("GET", "/a?b=1", ("@method", "@path")),
        "created an hour ago": rfc9421_sign("GET", "/a", created=time.time() - 3600),
        "a wrong secret": rfc9421_sign("GET", "/a", secret="guess"),
        "another path": rfc9421_sign("GET", "/b"),
    }
    for why, headers in refused.items():
        target = "/a?b=1" if why == "the query unsigned" else "/a"
        assert call(rfc, "GET", target, headers).status_code == 401, why
    replayed = rfc9421_sign("GET", "/r")
    assert call(rfc, "GET", "/r", replayed).status_code == 200
    assert call(rfc, "GET", "/r", replayed).status_code == 401
    changed = rfc9421_sign("POST", "/orders", ("@method", "@path", "@query", "content-digest"), body=body)
    assert call(rfc, "POST", "/orders", changed, b'{"item": 43}').status_code == 401  # the digest no longer matches
    uncovered = rfc9421_sign("POST", "/orders", ("@method", "@path", "@query"), body=body)
    assert call(rfc, "POST", "/orders", uncovered, body).status_code == 401  # validate_body needs content-digest covered
