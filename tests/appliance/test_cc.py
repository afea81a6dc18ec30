"""CC protection (tests/appliance/test_cc.py for appliance/stages/cc.py and cc/store.py): throttles,
bans and bad behaviour over HTTP against real redis-server processes the tests start and kill."""
from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..harness import EDGEWARD, Appliance, Upstream, appliance_config, chromium_args, free_port, start_appliance, stop

AUTH = {"Authorization": "Bearer test-admin-token"}


def domain(upstream: Upstream, cc: str, host: str = "cc.test") -> str:
    return f"  - hosts: [{host}]\n    upstream: {upstream.url}\n    waf: {{mode: off}}\n    cc: {cc}\n"


def fire(urls: list[str], count: int, headers: dict[str, str] | None = None, concurrency: int = 50) -> list[httpx.Response]:
    """``count`` GETs spread over ``urls`` (several appliances), ``concurrency`` at a time."""
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=20) as client:
            sem = asyncio.Semaphore(concurrency)

            async def one(i: int) -> httpx.Response:
                async with sem:
                    return await client.get(urls[i % len(urls)] + f"/r{i}", headers={"Host": "cc.test", **(headers or {})})

            return list(await asyncio.gather(*(one(i) for i in range(count))))

    return asyncio.run(run())


def get(app: Appliance, path: str = "/", host: str = "cc.test", **headers: str) -> httpx.Response:
    return httpx.get(app.url + path, headers={"Host": host, **headers}, timeout=10)


def cli(app: Appliance, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGEWARD, "cc", *args, "-c", str(app.config)], capture_output=True, text=True, timeout=30)


def test_two_appliances_with_two_workers_each_admit_exactly_the_limit(
        tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream, redis_server: Any) -> None:
    # a timeout above the default 50 ms: four workers and the load generator share two cores here, and
    # a decision that times out is let through (on_redis_error: open), which would make the count inexact
    extra = f"redis: {{url: '{redis_server.url}', timeout: 1s}}\n"
    rules = "[{name: per-ip, key: ip, limit: 100/minute}]"
    nodes = [start_appliance(tmp_path_factory.mktemp(f"cc-node{i}"), domain(upstream_a, rules), extra) for i in range(2)]
    try:
        responses = fire([n.url for n in nodes], 1000)
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 100 and statuses.count(429) == 900
        limited = next(r for r in responses if r.status_code == 429)
        assert limited.headers["ratelimit-policy"] == '"per-ip";q=100;w=60'
        assert limited.headers["ratelimit"].startswith('"per-ip";r=0;t=') and int(limited.headers["retry-after"]) >= 1
        assert limited.headers["x-request-id"]
    finally:
        for node in nodes:
            stop(node.proc)


def test_without_redis_configured_a_private_server_keeps_the_node_exact(
        tmp_path: Path, upstream_a: Upstream) -> None:
    app = start_appliance(tmp_path, domain(upstream_a, "[{key: ip, limit: 20/minute}]"), "redis: {timeout: 1s}\n")
    try:
        statuses = [r.status_code for r in fire([app.url], 100)]
        assert statuses.count(200) == 20 and statuses.count(429) == 80  # 2 workers, one count
        assert (Path(tmp_path / "state" / "run" / "cc-redis.sock")).exists()
    finally:
        stop(app.proc)
    assert not (tmp_path / "state" / "run" / "cc-redis.sock").exists() or subprocess.run(
        ["redis-cli", "-s", str(tmp_path / "state" / "run" / "cc-redis.sock"), "ping"], capture_output=True).returncode != 0


def test_the_private_server_stops_when_the_supervisor_is_killed(tmp_path: Path, upstream_a: Upstream) -> None:
    app = start_appliance(tmp_path, domain(upstream_a, "[{key: ip, limit: 20/minute}]"))
    socket = tmp_path / "state" / "run" / "cc-redis.sock"
    tree = [line.split() for line in subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True,
                                                      text=True).stdout.splitlines()]
    children, parents = [], {str(app.proc.pid)}
    while parents:  # the listeners and their granian workers: killed at the end, whatever happens
        found = [pid for pid, ppid in tree if ppid in parents]
        children += found
        parents = set(found)
    try:
        assert get(app).status_code == 200
        app.proc.kill()  # SIGKILL: the supervisor runs no cleanup
        app.proc.wait()
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-s", str(socket), "ping"], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "the private redis-server outlived its supervisor"
            time.sleep(0.1)
    finally:
        for pid in children:  # a SIGKILLed supervisor does not take them down
            subprocess.run(["kill", "-9", pid], capture_output=True)


def test_cookie_keys_fall_back_to_the_address_and_never_store_the_cookie(
        tmp_path: Path, upstream_a: Upstream, redis_server: Any) -> None:
    rules = "[{name: session, key: 'cookie:session', limit: 3/minute}]"
    app = start_appliance(tmp_path, domain(upstream_a, rules), f"redis: {redis_server.url}\n")
    try:
        secret = "s3ss10n-v4lue-Aa"
        for cookie in (secret, "other-session-7"):
            statuses = [get(app, Cookie=f"session={cookie}").status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429], cookie
        assert [get(app).status_code for _ in range(4)] == [200, 200, 200, 429]  # no cookie: the address's own count
        # a huge value and one that looks like a Redis command are only bytes to hash
        assert get(app, Cookie="session=" + "A" * 6000).status_code == 200  # under the upstream's own header limit
        assert get(app, Cookie="session=FLUSHALL;EVAL \"redis.call('FLUSHALL')\" 0").status_code == 200
        keys = redis_server.cli("--scan")
        assert secret not in keys and "FLUSHALL" not in keys and max(len(k) for k in keys.split()) < 120
        assert ":rl:" in keys
    finally:
        stop(app.proc)


def test_a_rule_exceeded_too_often_bans_the_key_until_it_expires(tmp_path: Path, upstream_a: Upstream, redis_server: Any) -> None:
    rules = "[{name: login, key: ip, limit: 2/minute, ban_after: 2, ban_for: 3s}]"
    app = start_appliance(tmp_path, domain(upstream_a, rules), f"redis: {redis_server.url}\n")
    try:
        assert [get(app).status_code for _ in range(4)] == [200, 200, 429, 403]  # the second rejection bans
        banned = get(app)
        assert banned.status_code == 403 and 1 <= int(banned.headers["retry-after"]) <= 3
        listed = json.loads(cli(app, "bans", "--json").stdout.splitlines()[0])
        assert listed["key"] == "127.0.0.1" and listed["rule"] == "login" and 0 < listed["expires_in"] <= 3
        deadline = time.monotonic() + 10
        while (status := get(app).status_code) == 403:
            assert time.monotonic() < deadline, "the ban never expired"
            time.sleep(0.2)
        assert status == 429  # the ban is over; the window (2 a minute) is still full
        assert cli(app, "bans").stdout.strip() == "no bans"
    finally:
        stop(app.proc)


def test_operators_ban_and_unban_from_the_cli_and_the_admin_api(tmp_path: Path, upstream_a: Upstream, redis_server: Any) -> None:
    app = start_appliance(tmp_path, domain(upstream_a, "[{key: ip, limit: 1000/minute}]")
                          + f"  - hosts: [other.test]\n    upstream: {upstream_a.url}\n    waf: {{mode: off}}\n",
                          f"redis: {redis_server.url}\n")
    try:
        out = cli(app, "ban", "::ffff:127.0.0.1", "--for", "1h", "--reason", "abuse report 42")
        assert out.returncode == 0 and "banned 127.0.0.1" in out.stdout
        assert get(app).status_code == 403
        assert get(app, host="other.test").status_code == 403  # a ban holds on every domain
        bans = httpx.get(app.admin + "/api/cc/bans", headers=AUTH).json()["bans"]
        assert bans[0]["key"] == "127.0.0.1" and bans[0]["reason"] == "abuse report 42" and bans[0]["by"] == "cli"
        assert cli(app, "unban", "127.0.0.1").returncode == 0 and get(app).status_code == 200
        assert cli(app, "unban", "127.0.0.1").returncode == 1
        assert httpx.get(app.admin + "/api/cc/bans").status_code == 401
        made = httpx.post(app.admin + "/api/cc/bans", json={"key": "127.0.0.1", "for": "10m", "reason": "api"}, headers=AUTH)
        assert made.status_code == 201 and get(app).status_code == 403
        assert httpx.post(app.admin + "/api/cc/bans", json={"key": "x", "for": "soon", "reason": "r"},
                          headers=AUTH).status_code == 400
        assert httpx.delete(app.admin + "/api/cc/bans/127.0.0.1", headers=AUTH).status_code == 200
        assert get(app).status_code == 200
    finally:
        stop(app.proc)


def test_bad_behaviour_bans_an_address_after_too_many_error_responses(
        tmp_path: Path, upstream_a: Upstream, redis_server: Any) -> None:
    cc = "{bad_behavior: {status_codes: [404], threshold: 5, window: 60s, ban_for: 1h}}"
    app = start_appliance(tmp_path, domain(upstream_a, cc), f"redis: {redis_server.url}\n")
    try:
        for i in range(5):
            assert get(app, f"/status/404?i={i}").status_code == 404
        deadline = time.monotonic() + 5
        while get(app).status_code != 403:
            assert time.monotonic() < deadline, "never banned"
            time.sleep(0.1)
        assert "bad responses" in cli(app, "bans").stdout
    finally:
        stop(app.proc)


@pytest.mark.parametrize("mode", ["open", "closed", "local"])
def test_each_on_redis_error_mode_with_redis_killed_and_restarted(
        tmp_path: Path, upstream_a: Upstream, redis_server: Any, mode: str) -> None:
    rules = f"[{{name: r, key: ip, limit: 3/minute, on_redis_error: {mode}}}]"
    # no leases: a worker would repeat its last 429 without asking Redis for up to one lease
    app = start_appliance(tmp_path, domain(upstream_a, rules), f"redis: {{url: '{redis_server.url}', lease: 0}}\n",
                          workers=1)
    try:
        assert [get(app).status_code for _ in range(4)] == [200, 200, 200, 429]
        redis_server.stop()
        started = time.monotonic()
        statuses = [get(app).status_code for _ in range(5)]
        assert time.monotonic() - started < 3  # never a hang: a 50 ms timeout, then a second without trying
        expected = {"open": [200] * 5, "closed": [503] * 5, "local": [200, 200, 200, 429, 429]}[mode]
        assert statuses == expected
        assert "degraded" in app.logs()

        def metric(name: str) -> float:
            text = httpx.get(app.admin + "/metrics", timeout=5).text
            return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))

        deadline = time.monotonic() + 5
        while metric("edgeward_cc_degraded_workers") != 1.0:  # published twice a second
            assert time.monotonic() < deadline, "the degraded worker never showed in the metrics"
            time.sleep(0.2)
        assert metric("edgeward_cc_redis_errors_total") >= 1
        redis_server.start()  # empty: the counts start again
        deadline = time.monotonic() + 10
        while "no longer degraded" not in app.logs():
            get(app)
            assert time.monotonic() < deadline, "never recovered"
            time.sleep(0.2)
        redis_server.cli("FLUSHALL")
        assert [get(app).status_code for _ in range(4)] == [200, 200, 200, 429]
    finally:
        stop(app.proc)


def test_gcra_lets_a_burst_through_then_spaces_requests(tmp_path: Path, upstream_a: Upstream, redis_server: Any) -> None:
    rules = "[{name: g, key: ip, limit: 2/second, algorithm: gcra, burst: 3}]"
    # no leases: a worker would repeat its last 429 without asking Redis for up to one lease
    app = start_appliance(tmp_path, domain(upstream_a, rules), f"redis: {{url: '{redis_server.url}', lease: 0}}\n",
                          workers=1)
    try:
        statuses = [get(app).status_code for _ in range(4)]
        assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
        refused_at = time.monotonic()
        while get(app).status_code != 200:  # one emission interval (500 ms) frees one place
            assert time.monotonic() - refused_at < 3, "no place freed"
            time.sleep(0.05)
        assert time.monotonic() - refused_at >= 0.2  # not at once: the bucket was empty
    finally:
        stop(app.proc)


def test_limits_and_keys_in_the_config_are_checked(tmp_path: Path, upstream_a: Upstream) -> None:
    for cc, words in (("[{limit: lots}]", "not a limit"), ("[{limit: 1/second, key: 'cookie:'}]", "needs a name"),
                      ("[{limit: 1/second, key: url}]", "a key is one of"),
                      ("[{limit: 1/second, burst: 5}]", "gcra only"), ("[{limit: 1/second, on_redis_error: maybe}]", "on_redis_error")):
        config = tmp_path / "edgeward.yaml"
        config.write_text(appliance_config(tmp_path, free_port(), free_port(), domain(upstream_a, cc)))
        out = subprocess.run([EDGEWARD, "check", "-c", str(config)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "cc" in out.stderr and words in out.stderr, (cc, out.stderr)
    config.write_text(appliance_config(tmp_path, free_port(), free_port(), domain(upstream_a, "[{limit: 1/second}]"),
                                       "redis:\n  lease: 10s\n"))
    out = subprocess.run([EDGEWARD, "check", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "edgeward.yaml:7: redis.lease: " in out.stderr and "between 0 and 5s" in out.stderr, out.stderr


def test_a_cookie_challenge_lets_browsers_through_and_keeps_cookieless_clients_throttled(
        tmp_path: Path, upstream_a: Upstream, redis_server: Any) -> None:
    rules = "[{name: page, key: ip, limit: 2/minute, action: cookie_challenge}]"
    # no leases: a worker would repeat its last 429 without asking Redis for up to one lease
    app = start_appliance(tmp_path, domain(upstream_a, rules), f"redis: {{url: '{redis_server.url}', lease: 0}}\n",
                          workers=1)
    try:
        assert [get(app).status_code for _ in range(2)] == [200, 200]
        bot = [get(app, "/page?x=1") for _ in range(3)]  # no cookie jar: challenged every time
        assert [r.status_code for r in bot] == [307, 307, 307] and bot[0].headers["location"] == "/page?x=1"
        assert "ew_challenge=" in bot[0].headers["set-cookie"] and "HttpOnly" in bot[0].headers["set-cookie"]
        with httpx.Client(base_url=app.url, headers={"Host": "cc.test", "User-Agent": "browser/1"},
                          follow_redirects=True, timeout=10) as browser:
            passed = browser.get("/page?x=1")
            assert passed.status_code == 200 and passed.json()["path"] == "/page?x=1"  # the upstream answered
            assert [r.status_code for r in passed.history] == [307, 307]  # the challenge, then the pass
            assert all(browser.get(f"/more{i}").status_code == 200 for i in range(5))  # exempt while the pass holds
            pass_cookie = browser.cookies["ew_pass"]
        # the pass is bound to the browser: another User-Agent (or address) with it is challenged again
        other = get(app, "/", **{"User-Agent": "curl/8", "Cookie": f"ew_pass={pass_cookie}"})
        assert other.status_code == 307
        assert get(app, "//evil.example/x").headers["location"] == "/evil.example/x"  # never off the site
    finally:
        stop(app.proc)


def test_a_javascript_proof_of_work_is_solved_by_a_real_browser(tmp_path: Path, upstream_a: Upstream, redis_server: Any) -> None:
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is absent (Debian package chromium; make test installs it)")
    from playwright.sync_api import sync_playwright

    rules = "[{name: page, key: ip, limit: 1/minute, action: js_challenge}]"
    app = start_appliance(tmp_path, domain(upstream_a, "{rules: " + rules + ", challenge: {difficulty: 12}}"),
                          f"redis: {redis_server.url}\n", workers=1)
    try:
        assert get(app).status_code == 200
        page_for_bots = get(app, "/app")
        assert page_for_bots.status_code == 429 and "text/html" in page_for_bots.headers["content-type"]
        assert 'data-difficulty="12"' in page_for_bots.text
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=chromium_args(f"--host-resolver-rules=MAP cc.test 127.0.0.1:{app.port}"))
            try:
                page = browser.new_page()
                response = page.goto(f"http://cc.test:{app.port}/app?from=chromium")
                assert response is not None
                page.wait_for_function("document.body && document.body.innerText.includes('\"server\"')", timeout=30000)
                seen = json.loads(page.inner_text("body"))
                assert seen["path"] == "/app?from=chromium"  # the upstream's answer, after the challenge
                names = {c["name"] for c in page.context.cookies()}
                assert "ew_pass" in names
                for i in range(3):  # exempt from the challenge rule while the pass holds
                    assert page.goto(f"http://cc.test:{app.port}/next{i}").status == 200  # type: ignore[union-attr]
            finally:
                browser.close()
        assert get(app, "/app").status_code == 429  # a client without JavaScript stays throttled
    finally:
        stop(app.proc)


def test_a_three_node_redis_cluster_counts_and_bans_with_the_same_rules(
        tmp_path: Path, upstream_a: Upstream) -> None:
    from ..servers.redis import remove, start_cluster

    try:
        cluster = start_cluster(3)
    except FileNotFoundError as exc:
        pytest.skip(f"{exc} is absent")
    try:
        rules = ("[{name: per-ip, key: ip, limit: 10/minute, ban_after: 3, ban_for: 1h}, "
                 "{name: session, key: 'cookie:session', fallback_key: null, limit: 4/minute}]")
        app = start_appliance(tmp_path, domain(upstream_a, rules),
                              f"redis: {{url: '{cluster.url}', cluster: true, timeout: 1s}}\n")
        try:
            statuses = [get(app, Cookie=f"session=s{i % 3}").status_code for i in range(12)]
            assert statuses.count(200) == 10 and statuses[10:] == [429, 429]  # exact across the nodes
            # each value's keys share a hash tag: one slot, one node
            keys = cluster.keys()
            by_value: dict[str, set[str]] = {}
            for key in keys:
                by_value.setdefault(key[key.index("{"):key.index("}") + 1], set()).add(key)
            assert len(by_value) >= 4 and any(":rl:" in k for k in keys)
            assert get(app).status_code == 403  # the third refusal banned the address
            listed = cli(app, "bans", "--json")
            assert listed.returncode == 0 and json.loads(listed.stdout.splitlines()[0])["key"] == "127.0.0.1"
            assert cli(app, "unban", "127.0.0.1").returncode == 0
            assert get(app).status_code == 429  # unbanned, and still over the limit
        finally:
            stop(app.proc)
    finally:
        for node in cluster.nodes:
            remove(node)


def test_through_sentinel_the_limits_survive_a_failover(tmp_path: Path, upstream_a: Upstream) -> None:
    from ..servers.redis import remove, start_sentinel

    try:
        servers = start_sentinel()
    except FileNotFoundError as exc:
        pytest.skip(f"{exc} is absent")
    try:
        rules = "[{name: r, key: ip, limit: 5/minute, on_redis_error: closed}]"
        app = start_appliance(tmp_path, domain(upstream_a, rules), f"redis: {{url: '{servers.url()}', timeout: 500ms}}\n",
                              workers=1)
        try:
            assert [get(app).status_code for _ in range(6)] == [200] * 5 + [429]
            first = servers.master_port()
            assert first == servers.master.port
            time.sleep(0.5)  # replication is asynchronous: let the replica catch up
            servers.master.stop()  # the master dies; the sentinel promotes the replica
            deadline = time.monotonic() + 30
            while servers.master_port() == first:
                assert time.monotonic() < deadline, "no failover"
                time.sleep(0.2)
            statuses = []
            deadline = time.monotonic() + 20
            while True:
                status = get(app).status_code
                statuses.append(status)
                if status == 429 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert statuses[-1] == 429, statuses  # the new master has the replicated count: still over
            assert set(statuses) <= {503, 429}, statuses  # closed while there was no master, never a free pass
        finally:
            stop(app.proc)
    finally:
        for server in (servers.master, servers.replica, servers.sentinel):
            remove(server)
