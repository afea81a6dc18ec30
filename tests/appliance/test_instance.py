"""One appliance per address and per state directory (tests/appliance/test_instance.py for
appliance/instance.py): a second one refuses to start instead of sharing the port."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..harness import EDGEWARD, Appliance, Upstream, appliance_config, free_port, start_appliance, stop

DOMAINS = "  - hosts: [app.example.test]\n    upstream: {url}\n"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream) -> Iterator[Appliance]:
    appliance = start_appliance(tmp_path_factory.mktemp("first"), DOMAINS.format(url=upstream_a.url))
    yield appliance
    stop(appliance.proc)


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEWARD_ADMIN_TOKEN": "t"}
    return subprocess.run([EDGEWARD, "serve", "-c", str(config)], capture_output=True, text=True, timeout=30, env=env)


def second(tmp: Path, upstream: Upstream, port: int, admin: int, state: Path | None = None) -> Path:
    config = tmp / "second.yaml"
    config.write_text(appliance_config(tmp, port, admin, DOMAINS.format(url=upstream.url), state_dir=state))
    return config


@pytest.mark.parametrize("which", ["listen", "admin"])
def test_a_second_appliance_on_a_bound_address_refuses_to_start(app: Appliance, upstream_a: Upstream,
                                                                 tmp_path: Path, which: str) -> None:
    port, admin = (app.port, free_port()) if which == "listen" else (free_port(), app.admin_port)
    result = serve(second(tmp_path, upstream_a, port, admin))
    assert result.returncode == 1
    assert "address already in use" in result.stderr and f"{which}" in result.stderr
    for _ in range(20):  # every request is still the first appliance's
        assert httpx.get(app.url + "/", headers={"Host": "app.example.test"}).status_code == 200


def test_a_second_appliance_on_the_same_state_dir_refuses_to_start(app: Appliance, upstream_a: Upstream,
                                                                   tmp_path: Path) -> None:
    state = app.config.parent / "state"
    result = serve(second(tmp_path, upstream_a, free_port(), free_port(), state))
    assert result.returncode == 1
    assert f"is in use by pid {app.proc.pid}" in result.stderr, result.stderr
    assert (state / "run" / "edgeward.pid").exists()  # the first one's pid file is untouched


def test_reload_with_another_config_is_refused(app: Appliance, upstream_a: Upstream, tmp_path: Path) -> None:
    other = second(tmp_path, upstream_a, free_port(), free_port(), app.config.parent / "state")
    result = subprocess.run([EDGEWARD, "reload", "-c", str(other)], capture_output=True, text=True)
    assert result.returncode == 2 and "reload refused" in result.stderr
    ok = subprocess.run([EDGEWARD, "reload", "-c", str(app.config)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
