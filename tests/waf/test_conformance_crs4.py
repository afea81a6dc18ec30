"""CRS 4's own regression tests (go-ftw format), every one judged over the wire as go-ftw does:
each request goes through a running appliance (DetectionOnly, paranoia 4, CRS 4 CI's limits,
response inspection on) to CRS's reflect backend, and the rule ids come from the appliance's
access log. The threshold of the WAF issue: with the shipped overrides at least 99.5 % of the
cases that are not skipped pass, and every override says why."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import SHARED
from .test_conformance import counts
from ..harness import EDGEWARD, Appliance, free_port, start_appliance, stop, wait_port

CRS4 = SHARED / "crs4"
TARBALL = CRS4 / "coreruleset-4.10.0.tar.gz"
REGRESSION = CRS4 / "regression" / "tests"
OVERRIDES = Path(__file__).resolve().parents[2] / "waf" / "overrides" / "crs-4-libmodsecurity3.yaml"
CI_DIRECTIVES = ('SecAction "id:10090,phase:1,pass,nolog,t:none,setvar:tx.arg_length=400,setvar:tx.arg_name_length=100,'
                 'setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.max_file_size=64100,setvar:tx.combined_file_sizes=65535,setvar:tx.max_num_args=255,setvar:tx.total_arg_length=64000"')


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([EDGEWARD, "conformance-backend", "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def crs4_appliance(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Appliance]:
    if not TARBALL.is_file() or not REGRESSION.is_dir():
        pytest.skip(f"{CRS4} is absent (set EDGEWARD_SHARED_DIR to the shared material)")
    from appliance.bundles import activations_for, import_bundle

    state = tmp_path_factory.mktemp("crs4-state")
    manifest = import_bundle(state, TARBALL).manifest
    activations_for(state).activate(manifest.digest, manifest.ref, reason="tests")
    domains = (f"  - hosts: ['*']\n    upstream: {backend}\n"
               f"    waf:\n      mode: detect\n      paranoia: 4\n      inspect_response: true\n"
               f"      directives: |\n        {CI_DIRECTIVES}\n")
    app = start_appliance(tmp_path_factory.mktemp("crs4"), domains, state_dir=state)
    yield app
    stop(app.proc)


CASES = 3891  # in the 296 files of ../shared/crs4/regression/tests


def test_backend_reflects_the_response_it_is_asked_for(backend: str) -> None:
    import httpx

    resp = httpx.post(backend + "/reflect", json={"status": 418, "headers": {"X-Probe": "yes"}, "body": "short and stout"})
    assert (resp.status_code, resp.headers["x-probe"], resp.text) == (418, "yes", "short and stout")
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"  # sniffed, as albedo does
    html = httpx.post(backend + "/reflect", json={"body": "<h1>.:NCC:. Shell v"})
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert httpx.get(backend + "/anything/else").status_code == 200


def test_crs4_regression_suite_over_the_wire(crs4_appliance: Appliance) -> None:
    proc = subprocess.run(
        [EDGEWARD, "conformance", "-c", str(crs4_appliance.config), str(REGRESSION),
         "--http", f"127.0.0.1:{crs4_appliance.port}", "--overrides", str(OVERRIDES)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    without = counts(next(x for x in lines if x.startswith("without overrides:")))
    assert sum(without) == CASES, proc.stdout[-2000:]
    passed, failed, skipped = counts(lines[-1])
    assert passed / (passed + failed) >= 0.995, proc.stdout[-4000:]
    assert "judged in-process" not in proc.stderr  # every go-ftw expectation went over the wire
    print(proc.stdout[-600:], file=sys.stderr)


def test_every_crs4_override_has_a_reason() -> None:
    from waf.conformance import load_overrides

    overrides = load_overrides(OVERRIDES)
    assert overrides and all(len(o.reason) > 40 for o in overrides)
