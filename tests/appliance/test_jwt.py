"""JWT authentication (tests/appliance/test_jwt.py for authn/jwtauth.py and authn/jwks.py): inline
HMAC and RSA keys, a JWKS served by a local IdP stand-in, pinned algorithms, claims."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..harness import Appliance, Upstream, start_appliance, stop

SECRET = "hs256-shared-secret-for-tests-0123456789"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()
EC_KEY = ec.generate_private_key(ec.SECP256R1())


class IdP:
    """Serves a JWKS with the EC key under kid "ec-1"; counts fetches; can be taken down."""

    def __init__(self) -> None:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": "ec-1", "use": "sig", "alg": "ES256"}]}
        self.fetches = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                idp.fetches += 1
                body = json.dumps(idp.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def idp() -> Iterator[IdP]:
    server = IdP()
    yield server
    try:
        server.down()
    except OSError:
        pass


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream, idp: IdP) -> Iterator[Appliance]:
    pem = RSA_PUBLIC_PEM.replace("\n", "\\n")
    domains = f"""\
  - hosts: [jwt.test]
    upstream: {upstream_a.url}
    waf: {{mode: off}}
    auth:
      methods: [jwt]
      allow: [staff, carol]
      jwt:
        keys:
          - {{algorithm: HS256, secret_env: JWT_SECRET}}
          - {{kid: rsa-1, algorithm: RS256, public_key: "{pem}"}}
        jwks_url: {idp.url}
        issuers: [https://idp.test]
        audiences: [shop]
        claims_to_headers: {{email: X-User-Email, roles: X-User-Roles}}
        cookie: token
"""
    extra = "consumers:\n  - name: alice\n    groups: [staff]\n"
    appliance = start_appliance(tmp_path_factory.mktemp("jwt"), domains, extra, env={"JWT_SECRET": SECRET})
    yield appliance
    stop(appliance.proc)


def token(key: Any = SECRET, alg: str = "HS256", kid: str | None = None, **claims: Any) -> str:
    body = {"iss": "https://idp.test", "aud": "shop", "sub": "alice", "exp": int(time.time()) + 300, **claims}
    for name, value in list(body.items()):
        if value is None:
            del body[name]
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


def hs256_by_hand(secret: bytes, kid: str) -> str:
    """What pyjwt refuses to make: an HS256 token whose secret is a public key (algorithm confusion)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode())
    body = b64(json.dumps({"iss": "https://idp.test", "aud": "shop", "sub": "alice", "exp": int(time.time()) + 300}).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def call(app: Appliance, bearer: str | None = None, **headers: str) -> httpx.Response:
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    return httpx.get(app.url + "/", headers={"Host": "jwt.test", **headers}, timeout=10)


def seen(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 200, (resp.status_code, resp.text)
    return {k.lower(): v for k, v in resp.json()["headers"]}


def test_hmac_rsa_and_jwks_keys_each_verify_their_algorithm(app: Appliance, idp: IdP) -> None:
    got = seen(call(app, token(email="alice@example.test", roles=["admin", "ops"])))
    assert got["x-consumer-username"] == "alice" and got["x-consumer-groups"] == "staff"
    assert got["x-user-email"] == "alice@example.test" and got["x-user-roles"] == '["admin","ops"]'
    assert "authorization" not in got
    assert seen(call(app, token(RSA_KEY, "RS256", "rsa-1")))["x-credential-identifier"] == "jwt:alice"
    before = idp.fetches
    for _ in range(8):  # each of the two workers fetches once, then uses its cache
        assert seen(call(app, token(EC_KEY, "ES256", "ec-1", sub="carol")))["x-consumer-username"] == "carol"
    assert 1 <= idp.fetches - before <= 2
    assert seen(call(app, None, Cookie=f"token={token()}"))["x-consumer-username"] == "alice"


def test_forged_expired_and_misaddressed_tokens_are_refused(app: Appliance) -> None:
    unsigned = jwt.encode({"sub": "alice", "iss": "https://idp.test", "aud": "shop", "exp": int(time.time()) + 300},
                          None, algorithm="none")  # type: ignore[arg-type]
    confused = hs256_by_hand(RSA_PUBLIC_PEM.encode(), "rsa-1")  # the RSA public key used as an HMAC secret
    bad = [
        unsigned, confused, token("another secret that is long enough 0123"), token(exp=int(time.time()) - 3600),
        token(iss="https://evil.test"), token(aud="other"), token(exp=None), token(sub=None),
        token(EC_KEY, "ES256", "unknown-kid"), token(RSA_KEY, "RS512", "rsa-1"), "not.a.jwt",
    ]
    for item in bad:
        resp = call(app, item)
        assert resp.status_code == 401, item
        assert resp.headers["www-authenticate"] == 'Bearer realm="edgeward"'
    assert call(app, token(sub="bob")).status_code == 403  # valid, but not allowed here
    assert call(app).status_code == 401


def test_an_unknown_kid_refreshes_the_jwks_at_most_once_per_30_seconds_and_stale_keys_serve(
        app: Appliance, idp: IdP) -> None:
    assert call(app, token(EC_KEY, "ES256", "ec-1", sub="carol")).status_code == 200
    before = idp.fetches
    for i in range(5):
        assert call(app, token(EC_KEY, "ES256", f"made-up-{i}")).status_code == 401
    assert idp.fetches - before <= 2  # a flood of made-up kids does not hammer the IdP (at most one refresh per worker)
    idp.down()
    assert call(app, token(EC_KEY, "ES256", "ec-1", sub="carol")).status_code == 200  # the IdP is down: cached keys serve


def test_client_copies_of_claim_headers_are_dropped(app: Appliance) -> None:
    got = seen(call(app, token(), **{"X-User-Email": "forged@evil.test", "X-User-Roles": "root"}))
    assert "x-user-email" not in got and "x-user-roles" not in got  # the token has neither claim
