"""Activating and rolling back bundles on a running appliance: every worker switches within a
second, under continuous traffic, with zero failed requests; per domain; through the admin API."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.bundles import activations_for, import_bundle

from ..harness import EDGEWARD, Appliance, Upstream, start_appliance, stop
from .test_reload import Traffic


def bundle(tmp: Path, name: str, word: str) -> str:
    src = tmp / name
    (src / "rules").mkdir(parents=True)
    (src / "rules" / "local.conf").write_text(
        f'SecRule ARGS:x "@streq {word}" "id:1001,phase:2,deny,status:403,log,msg:\'{word}\'"\n'
        'SecRule ARGS:y "@streq seen" "id:1002,phase:1,pass,log,msg:\'seen by both\'"\n')
    return src.as_posix()


@pytest.fixture()
def app(tmp_path: Path, upstream_a: Upstream) -> Iterator[Appliance]:
    state = tmp_path / "state"
    lenient = import_bundle(state, bundle(tmp_path, "lenient", "never"), "local", "1").manifest
    import_bundle(state, bundle(tmp_path, "strict", "evil"), "local", "2")
    activations_for(state).activate(lenient.digest, lenient.ref, reason="start")
    domains = (f"  - hosts: [app.example.test]\n    upstream: {upstream_a.url}\n    waf: {{mode: block}}\n"
               f"  - hosts: [other.test, \"*.other.test\"]\n    upstream: {upstream_a.url}\n    waf: {{mode: block}}\n")
    appliance = start_appliance(tmp_path, domains, state_dir=state)
    yield appliance
    stop(appliance.proc)


def evil(app: Appliance, host: str = "app.example.test") -> int:
    return httpx.get(app.url + "/?x=evil", headers={"Host": host}).status_code


def until(predicate: object, limit: float = 1.5) -> float:
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - started < limit, "not switched in time"
        time.sleep(0.02)
    return time.monotonic() - started


def bundle_cli(app: Appliance, *args: str) -> None:
    out = subprocess.run([EDGEWARD, "bundle", args[0], "-c", str(app.config), *args[1:]], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_activate_and_rollback_under_traffic(app: Appliance) -> None:
    assert evil(app) == 200
    with Traffic(app) as traffic:
        bundle_cli(app, "activate", "local@2", "--reason", "tighten")
        # every worker: several consecutive fresh-connection requests all blocked
        took = until(lambda: all(evil(app) == 403 for _ in range(6)))
        bundle_cli(app, "rollback", "--reason", "too strict")
        took_back = until(lambda: all(evil(app) == 200 for _ in range(6)))
    assert took < 1.5 and took_back < 1.5
    assert not traffic.errors and traffic.results and all(s == 200 for _, s, _ in traffic.results)


def test_activation_per_domain(app: Appliance) -> None:
    bundle_cli(app, "activate", "local@2", "--domain", "other.test")
    until(lambda: evil(app, "other.test") == 403)
    assert evil(app, "app.example.test") == 200
    bundle_cli(app, "rollback", "--domain", "other.test")
    until(lambda: evil(app, "other.test") == 200)


def test_activation_by_any_host_applies_to_the_whole_domain(app: Appliance) -> None:
    bundle_cli(app, "activate", "local@2", "--domain", "*.other.test")  # the domain's second host
    until(lambda: evil(app, "other.test") == 403 and evil(app, "www.other.test") == 403)
    assert evil(app, "app.example.test") == 200


def test_activation_for_a_host_no_domain_has_is_refused(app: Appliance) -> None:
    out = subprocess.run([EDGEWARD, "bundle", "activate", "-c", str(app.config), "local@2", "--domain", "othr.test"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "no configured domain has host 'othr.test'" in out.stderr
    api = httpx.post(app.admin + "/api/bundles/local@2/activate", json={"domain": "othr.test"},
                     headers={"Authorization": "Bearer test-admin-token"})
    assert api.status_code == 422 and "no configured domain" in api.json()["error"]
    history = subprocess.run([EDGEWARD, "bundle", "history", "-c", str(app.config), "--domain", "othr.test"],
                             capture_output=True, text=True)
    assert history.returncode == 1 and "no configured domain" in history.stderr


def test_admin_api_activation(app: Appliance) -> None:
    api = app.admin + "/api/bundles"
    assert httpx.post(api + "/local@2/activate").status_code == 401
    auth = {"Authorization": "Bearer test-admin-token"}
    listing = httpx.get(api, headers=auth).json()
    assert {b["ref"] for b in listing} == {"local@1", "local@2"}
    resp = httpx.post(api + "/local@2/activate", headers=auth, json={"reason": "api"})
    assert resp.status_code == 200 and resp.json()["scope"] == "global"
    until(lambda: evil(app) == 403)
    assert httpx.get(api + "/local@2/verify", headers=auth).json()["ok"] is True
    diff = httpx.get(api + "/local@1/diff/local@2", headers=auth).json()
    assert list(diff["changed"]) == ["1001"]
    assert httpx.post(api + "/rollback", headers=auth, json={}).json()["ref"] == "local@1"
    until(lambda: evil(app) == 200)
    assert [h["by"] for h in httpx.get(api + "/history", headers=auth).json()][-2:] == ["admin-api", "admin-api"]
    assert httpx.get(api + "/nope@1", headers=auth).status_code == 404


def test_canary_reports_disagreements_then_promotes(app: Appliance) -> None:
    import json

    bundle_cli(app, "activate", "local@2", "--canary", "--reason", "try strict")
    ids = []

    def report() -> list[dict[str, object]]:
        out = subprocess.run([EDGEWARD, "bundle", "canary-report", "-c", str(app.config), "--json"],
                             capture_output=True, text=True)
        return json.loads(out.stdout)

    def evil_seen_by_candidate() -> bool:
        resp = httpx.get(app.url + "/?x=evil&y=seen", headers={"Host": "app.example.test"})
        assert resp.status_code == 200  # the canary never enforces
        ids.append(resp.headers["x-request-id"])
        return any(e["candidate_only_blocks"] >= 6 for e in report())

    until(evil_seen_by_candidate, limit=10)  # workers pick up the canary, then count
    assert httpx.get(app.url + "/?x=fine", headers={"Host": "app.example.test"}).status_code == 200
    until(lambda: sum(int(e["requests"]) for e in report()) >= 7, limit=5)  # type: ignore[call-overload]
    entry = next(e for e in report() if e["scope"] == "global")
    assert entry["candidate"] == "local@2" and entry["current"] == "local@1"
    assert entry["current_only_blocks"] == 0 and entry["requests"] >= 7
    # 1002 matched in both bundles: only 1001 explains the disagreement (the current bundle's matches count)
    assert set(entry["rules"]) == {"1001"}  # type: ignore[arg-type]
    rule = entry["rules"]["1001"]  # type: ignore[index]
    assert rule["candidate_blocks"] >= 6 and set(rule["samples"]) <= set(ids) and rule["samples"]
    assert entry["extra_cost_percent"] is not None
    text = subprocess.run([EDGEWARD, "bundle", "canary-report", "-c", str(app.config)], capture_output=True, text=True).stdout
    assert "rule 1001: candidate blocks" in text and "extra cost" in text
    bundle_cli(app, "promote", "--reason", "looks right")
    until(lambda: evil(app) == 403)
