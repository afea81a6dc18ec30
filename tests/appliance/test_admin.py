"""The admin plane (tests/appliance/test_admin.py for appliance/admin/): bad input is a 4xx with a
reason, a corrupt activation history is a clear error, and config changes reach it without a
restart."""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.bundles import activations_for, import_bundle

from ..harness import EDGEWARD, Appliance, Upstream, start_appliance, stop
from .test_bundle_activation import bundle

TOKEN = {"Authorization": "Bearer test-admin-token"}


@pytest.fixture()
def app(tmp_path: Path, upstream_a: Upstream) -> Iterator[Appliance]:
    state = tmp_path / "state"
    first = import_bundle(state, bundle(tmp_path, "one", "never"), "local", "1").manifest
    second = import_bundle(state, bundle(tmp_path, "two", "evil"), "local", "2").manifest
    activations_for(state).activate(first.digest, first.ref, reason="start")
    activations_for(state).activate(second.digest, second.ref, reason="next")
    appliance = start_appliance(tmp_path, f"  - hosts: [app.example.test]\n    upstream: {upstream_a.url}\n",
                                state_dir=state)
    yield appliance
    stop(appliance.proc)


def test_rollback_with_bad_steps_is_a_400(app: Appliance) -> None:
    for steps in ([1], "1", 0, -1, True, 1.5, None):
        resp = httpx.post(app.admin + "/api/bundles/rollback", headers=TOKEN, json={"steps": steps})
        assert resp.status_code == 400 and "steps" in resp.json()["error"], steps
    history = httpx.get(app.admin + "/api/bundles/history", headers=TOKEN).json()
    assert [e["ref"] for e in history] == ["local@1", "local@2"]  # nothing was rolled back


def test_rollback_goes_back_one_step(app: Appliance) -> None:
    resp = httpx.post(app.admin + "/api/bundles/rollback", headers=TOKEN, json={"steps": 1, "reason": "test"})
    assert resp.status_code == 200 and resp.json()["ref"] == "local@1"


def test_a_corrupt_activation_history_is_a_clear_error(app: Appliance) -> None:
    history = app.config.parent / "state" / "bundles" / "activations.json"
    history.write_text('{"global": [')
    resp = httpx.get(app.admin + "/api/bundles/history", headers=TOKEN)
    assert resp.status_code == 500 and "cannot read the activation history" in resp.json()["error"]
    cli = subprocess.run([EDGEWARD, "bundle", "history", "-c", str(app.config)], capture_output=True, text=True)
    assert cli.returncode != 0 and "cannot read the activation history" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_admin_follows_a_changed_token_without_a_restart(app: Appliance, upstream_a: Upstream) -> None:
    """The token's variable name is config: after the file changes, the old token stops working."""
    assert httpx.get(app.admin + "/api/bundles", headers=TOKEN).status_code == 200
    text = app.config.read_text().replace("token_env: EDGEWARD_ADMIN_TOKEN", "token_env: EDGEWARD_OTHER_TOKEN")
    app.write_config(text)
    deadline = time.monotonic() + 5
    while httpx.get(app.admin + "/api/bundles", headers=TOKEN).status_code != 401:
        assert time.monotonic() < deadline, "the admin plane still uses the old token variable"
        time.sleep(0.05)
    assert json.loads(httpx.get(app.admin + "/api/bundles", headers=TOKEN).text)["error"] == "admin token not configured"


def test_api_imports_server_paths_only_from_import_dirs(app: Appliance, tmp_path: Path) -> None:
    allowed = tmp_path / "imports"
    source = Path(bundle(allowed, "three", "worst"))
    outside = Path(bundle(tmp_path / "elsewhere", "four", "nope"))
    refused = httpx.post(app.admin + "/api/bundles/import", headers=TOKEN, json={"source": str(source)})
    assert refused.status_code == 403 and "import_dirs" in refused.json()["error"]
    app.write_config(app.config.read_text() + f"rules: {{import_dirs: [{allowed}]}}\n")
    deadline = time.monotonic() + 5
    while (resp := httpx.post(app.admin + "/api/bundles/import", headers=TOKEN,
                              json={"source": str(source), "name": "three", "version": "1"})).status_code == 403:
        assert time.monotonic() < deadline, "the admin plane did not pick up rules.import_dirs"
        time.sleep(0.05)
    assert resp.status_code == 201 and resp.json()["ref"] == "three@1"
    escape = httpx.post(app.admin + "/api/bundles/import", headers=TOKEN,
                        json={"source": f"{allowed}/../elsewhere/{outside.name}"})
    assert escape.status_code == 403
