"""OpenID Connect (tests/appliance/test_oidc.py for appliance/stages/oidc.py and authn/oidc.py)
against a real provider (oidc-provider on Node.js) and, for the browser flow, a real headless
Chromium driven by Playwright. The browser may reach only the appliance and the provider."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ..harness import Appliance, Upstream, chromium_args, free_port, start_appliance, stop
from ..servers.idp import CLIENT_SECRET, IdP, available, start_idp


@pytest.fixture(scope="module")
def idp_and_app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream) -> Iterator[tuple[IdP, Appliance]]:
    why = available()
    if why:
        pytest.skip(why)
    port = free_port()
    base = f"http://app.test:{port}"
    idp = start_idp(f"{base}/.edgeward/oidc/callback,http://app2.test:{port}/.edgeward/oidc/callback", f"{base}/bye",
                    access_ttl=62)
    oidc = (f"issuer: {idp.issuer}, client_id: edgeward, client_secret_env: OIDC_CLIENT_SECRET, "
            f"post_logout_redirect_uri: '{base}/bye', introspection: true, "
            "scopes: [openid, email, profile, groups, offline_access]")
    domains = f"""\
  - hosts: [app.test]
    upstream: {upstream_a.url}
    waf: {{mode: off}}
    auth: {{methods: [oidc], oidc: {{{oidc}}}}}
    routes:
      - path: /bye
        auth: off
      - path: /api
        auth: {{oidc: {{{oidc}, bearer_only: true}}}}
      - path: /staff
        auth: {{oidc: {{{oidc}, required_groups: [staff]}}}}
      - path: /partner
        auth: {{oidc: {{{oidc}, bearer_only: true, audiences: [partner-api]}}}}
  - hosts: [app2.test]
    upstream: {upstream_a.url}
    waf: {{mode: off}}
    auth: {{methods: [oidc], oidc: {{{oidc}, session_store: redis}}}}
"""
    app = start_appliance(tmp_path_factory.mktemp("oidc"), domains, env={"OIDC_CLIENT_SECRET": CLIENT_SECRET}, port=port)
    yield idp, app
    stop(app.proc)
    idp.stop()


def submit_form(client: httpx.Client, page: str, fill: dict[str, str]) -> httpx.Response:
    """Post the provider's (development) login or consent form."""
    action = re.search(r'<form[^>]*action="([^"]+)"', page)
    assert action is not None, page[:500]
    fields = {m.group(1): m.group(2) or "" for m in re.finditer(r'<input[^>]*name="([^"]+)"(?:[^>]*value="([^"]*)")?', page)}
    return client.post(action.group(1), data={**fields, **fill})


def provider_login(client: httpx.Client, response: httpx.Response, user: str) -> httpx.Response:
    """Follow the provider's pages (login, consent) until it sends the browser back to the app."""
    for _ in range(10):
        location = response.headers.get("location")
        if location is not None and urlsplit(location).hostname in ("app.test", "app2.test"):
            return response
        if location is not None:
            response = client.get(response.url.join(location))
        else:
            response = submit_form(client, response.text, {"login": user, "password": "secret"})
    raise AssertionError("the provider never sent the browser back")


def gateway(app: Appliance, host: str = "app.test") -> httpx.Client:
    """A client for the appliance that addresses it as ``host``, with its own cookie jar."""
    return httpx.Client(base_url=app.url, headers={"Host": f"{host}:{app.port}", "Accept": "text/html"}, timeout=15)


def login_through_gateway(app: Appliance, idp: IdP, path: str = "/dashboard?x=1", user: str = "alice",
                          host: str = "app.test") -> tuple[httpx.Client, httpx.Response, str]:
    """(the gateway client with its session cookie, the callback's answer, the callback URL)."""
    edge = gateway(app, host)
    start = edge.get(path)
    assert start.status_code == 302 and start.headers["location"].startswith(idp.issuer + "/auth?")
    query = parse_qs(urlsplit(start.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["state"] and query["nonce"]
    with httpx.Client(timeout=15) as browser_at_idp:
        back = provider_login(browser_at_idp, browser_at_idp.get(start.headers["location"]), user)
    callback = back.headers["location"].replace(f"http://{host}:{app.port}", "")
    return edge, edge.get(callback), callback


def test_a_browser_signs_in_gets_a_refreshed_token_and_signs_out(idp_and_app: tuple[IdP, Appliance]) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is absent (Debian package chromium; make test installs it)")
    from playwright.sync_api import Route, sync_playwright

    idp, app = idp_and_app
    base = f"http://app.test:{app.port}"

    def local_only(route: Route) -> None:  # the provider's page links a web font: never fetched
        host = urlsplit(route.request.url).hostname
        route.continue_() if host in ("app.test", "127.0.0.1") else route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=chromium_args("--host-resolver-rules=MAP app.test 127.0.0.1"))
        try:
            context = browser.new_context()
            context.route("**/*", local_only)
            page = context.new_page()
            page.goto(f"{base}/dashboard?x=1")
            page.wait_for_url(re.compile(r".*/interaction/.*"))
            page.fill("input[name=login]", "alice")
            page.fill("input[name=password]", "secret")
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/interaction/.*"))  # consent
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/dashboard?x=1")
            seen = {k.lower(): v for k, v in json.loads(page.inner_text("body"))["headers"]}
            assert seen["x-consumer-username"] == "alice" and seen["x-consumer-groups"] == "staff"
            info = json.loads(base64.b64decode(seen["x-userinfo"]))
            assert info["email"] == "alice@example.test" and info["sub"] == "alice"
            first_token = seen["authorization"]
            cookie = next(c for c in context.cookies() if c["name"] == "ew_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
            deadline = time.monotonic() + 15
            while True:  # within a minute of the (62 s) access token's expiry, the next request refreshes it
                page.goto(f"{base}/next")
                seen = {k.lower(): v for k, v in json.loads(page.inner_text("body"))["headers"]}
                assert seen["x-consumer-username"] == "alice"
                if seen["authorization"] != first_token:
                    break
                assert time.monotonic() < deadline, "the access token was never refreshed"
                time.sleep(0.5)
            page.goto(f"{base}/.edgeward/oidc/logout")
            page.wait_for_url(re.compile(rf"{re.escape(idp.issuer)}/session/end.*"))
            page.click("button[autofocus], button[type=submit]")  # the provider asks to confirm
            page.wait_for_url(f"{base}/bye")
            assert not [c for c in context.cookies() if c["name"] == "ew_session"]
            page.goto(f"{base}/dashboard")
            page.wait_for_url(re.compile(r".*/interaction/.*"))  # signed out: the provider asks again
        finally:
            browser.close()


def test_the_callback_refuses_forged_state_replayed_codes_and_tampered_cookies(idp_and_app: tuple[IdP, Appliance]) -> None:
    idp, app = idp_and_app
    edge, done, callback = login_through_gateway(app, idp)
    assert done.status_code == 302 and done.headers["location"] == "/dashboard?x=1"
    assert edge.get("/dashboard").status_code == 200
    with gateway(app) as stranger:  # a callback without the login that started it
        forged = stranger.get(callback)
        assert forged.status_code == 401 and "ew_session" not in forged.headers.get("set-cookie", "")
    edge2, first, callback2 = login_through_gateway(app, idp)
    assert first.status_code == 302
    flow = f"ew_oidc_flow={dict(edge2.cookies).get('ew_oidc_flow', '')}"
    with gateway(app) as replay:
        replay.cookies.clear()
        again = replay.get(callback2, headers={"Cookie": flow})
    assert again.status_code == 401  # the code was used (and the flow cookie was cleared on the first use)
    edge3, _, _ = login_through_gateway(app, idp)
    session = edge3.cookies["ew_session"]
    tampered = session[:-5] + ("A" if session[-5] != "A" else "B") + session[-4:]
    with gateway(app) as other:
        assert other.get("/dashboard", headers={"Cookie": f"ew_session={tampered}"}).status_code == 302  # to the provider
        assert other.get("/dashboard", headers={"Cookie": f"ew_session={tampered}", "Accept": "application/json"}
                         ).status_code == 401
    for client in (edge, edge2, edge3):
        client.close()


def test_the_return_url_stays_on_the_site(idp_and_app: tuple[IdP, Appliance]) -> None:
    idp, app = idp_and_app
    edge, done, _ = login_through_gateway(app, idp, app.url + "//evil.example/steal")  # the raw target is //evil...
    edge.close()
    assert done.status_code == 302 and done.headers["location"] == "/"
    from authn.oidc import same_site_target

    for bad in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "", "javascript:alert(1)"):
        assert same_site_target(bad) == "/"
    assert same_site_target("/orders?id=7") == "/orders?id=7"


def pkce_token(idp: IdP, user: str = "alice") -> str:
    """An access token straight from the provider (authorization code with PKCE), for the API tests."""
    verifier = secrets.token_urlsafe(48)
    redirect = idp.redirect_uri.split(",")[0]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    with httpx.Client(timeout=15) as client:
        start = client.get(f"{idp.issuer}/auth", params={
            "client_id": "edgeward", "response_type": "code", "redirect_uri": redirect, "scope": "openid email",
            "state": "s", "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})
        back = provider_login(client, start, user)
        code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
        tokens = client.post(f"{idp.issuer}/token", auth=("edgeward", CLIENT_SECRET), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "code_verifier": verifier})
        tokens.raise_for_status()
        return str(tokens.json()["access_token"])


def test_api_routes_take_access_tokens_and_never_redirect(idp_and_app: tuple[IdP, Appliance]) -> None:
    idp, app = idp_and_app
    token = pkce_token(idp)
    with gateway(app) as api:
        ok = api.get("/api/orders", headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        assert ok.status_code == 200
        assert {k.lower(): v for k, v in ok.json()["headers"]}["x-consumer-username"] == "alice"
        missing = api.get("/api/orders")  # even a browser's Accept gets a 401 here, never a redirect
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        bad = api.get("/api/orders", headers={"Authorization": "Bearer not-a-token"})
        assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
        staff_only = api.get("/staff", headers={"Authorization": f"Bearer {pkce_token(idp, 'bob')}"})
        assert staff_only.status_code == 403  # bob's token carries no staff group
        other_audience = api.get("/partner/x", headers={"Authorization": f"Bearer {token}"})
        assert other_audience.status_code == 403  # a valid token, for another audience
        assert 'error="insufficient_scope"' in other_audience.headers["www-authenticate"]


def test_sessions_can_live_in_redis_and_end_there_at_logout(idp_and_app: tuple[IdP, Appliance]) -> None:
    import subprocess

    idp, app = idp_and_app
    edge, done, _ = login_through_gateway(app, idp, host="app2.test")
    try:
        assert done.status_code == 302 and edge.get("/dashboard").status_code == 200
        assert len(edge.cookies["ew_session"]) < 200  # an id: the tokens stay in Redis
        socket = yaml_state(app) / "run" / "cc-redis.sock"
        keys = subprocess.run(["redis-cli", "-s", str(socket), "--scan", "--pattern", "ew:*:oidc"],
                              capture_output=True, text=True, timeout=10).stdout.split()
        assert len(keys) == 1
        assert edge.get("/.edgeward/oidc/logout").status_code == 302
        assert not subprocess.run(["redis-cli", "-s", str(socket), "--scan", "--pattern", "ew:*:oidc"],
                                  capture_output=True, text=True, timeout=10).stdout.split()
    finally:
        edge.close()


def yaml_state(app: Appliance) -> "Path":
    import yaml
    from pathlib import Path

    return Path(yaml.safe_load(app.config.read_text())["state_dir"])


def test_a_wrong_nonce_is_refused() -> None:
    import asyncio

    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from authn.jwks import JWKSCache
    from authn.oidc import LoginFailed, OidcFlows, Provider, Settings

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider = Provider("https://idp.test")
    provider.metadata = {"issuer": "https://idp.test", "id_token_signing_alg_values_supported": ["RS256"]}
    provider._fetched = time.monotonic()
    provider.jwks = JWKSCache("https://idp.test/jwks")
    provider.jwks.keys = {"k1": (pyjwt.PyJWK.from_dict({**json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())),
                                                         "kid": "k1"}), "RS256")}
    flows = OidcFlows(Settings("https://idp.test", "edgeward", "s", ["openid"], "/cb", "/out", None, 60, 60, "ew_session",
                               base64.urlsafe_b64encode(b"k" * 32)), provider)
    now = int(time.time())
    token = pyjwt.encode({"iss": "https://idp.test", "aud": "edgeward", "sub": "alice", "iat": now, "exp": now + 60,
                          "nonce": "the-login-nonce"}, key, algorithm="RS256", headers={"kid": "k1"})
    assert asyncio.run(flows.verify_id_token(token, "the-login-nonce"))["sub"] == "alice"
    with pytest.raises(LoginFailed, match="nonce"):
        asyncio.run(flows.verify_id_token(token, "another-nonce"))


def test_the_provider_down_is_a_clear_503(idp_and_app: tuple[IdP, Appliance]) -> None:
    idp, app = idp_and_app
    edge, _, _ = login_through_gateway(app, idp)
    token = pkce_token(idp)
    idp.stop()
    try:
        # an introspection that cannot reach the provider is a 503, never a pass or a crash
        with gateway(app) as api:
            answer = api.get("/api/x", headers={"Authorization": f"Bearer {token}x"})
            assert answer.status_code == 503 and answer.headers["x-request-id"]
        # a session whose token must be refreshed (within a minute of its 62 s) meets the provider down: 503
        deadline = time.monotonic() + 15
        while (status := edge.get("/dashboard").status_code) == 200:
            assert time.monotonic() < deadline, "the refresh never came due"
            time.sleep(0.5)
        assert status == 503
    finally:
        edge.close()
        idp.start()
