"""CRS's own regression tests through the engine, with the thresholds of the WAF issue:
without overrides at least as many passes as nginx+ModSecurity 3.0.9 on this machine (2,383 of
2,444), with the shipped overrides at least 99.5% of the cases that are not skipped."""
from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import SHARED
from ..harness import copy_state, EDGEWARD, Appliance, Upstream, start_appliance, stop

REGRESSION = SHARED / "crs-regression"
OVERRIDES = Path(__file__).resolve().parents[2] / "waf" / "overrides" / "crs-3.3.4-libmodsecurity3.yaml"
NGINX_REFERENCE_PASSES = 2383


@pytest.fixture(scope="module")
def detect_appliance(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream, crs_state: Path) -> Iterator[Appliance]:
    """What CRS's CI runs against: the engine in DetectionOnly at paranoia 4, behind a web server."""
    if not REGRESSION.is_dir():
        pytest.skip(f"{REGRESSION} is absent (set EDGEWARD_SHARED_DIR to the shared material)")
    domains = f"  - hosts: [localhost, 127.0.0.1]\n    upstream: {upstream_a.url}\n    waf: {{mode: detect, paranoia: 4}}\n"
    app = start_appliance(tmp_path_factory.mktemp("conformance"), domains,
                          state_dir=copy_state(crs_state))
    yield app
    stop(app.proc)


def counts(line: str) -> tuple[int, int, int]:
    m = re.search(r"(\d+) passed, (\d+) failed, (\d+) skipped", line)
    assert m, line
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def test_crs_regression_suite(detect_appliance: Appliance) -> None:
    proc = subprocess.run(
        [EDGEWARD, "conformance", "-c", str(detect_appliance.config), str(REGRESSION),
         "--http", f"127.0.0.1:{detect_appliance.port}", "--overrides", str(OVERRIDES)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    without = counts(next(x for x in lines if x.startswith("without overrides:")))
    with_overrides = counts(lines[-1])
    assert sum(without) == 2444
    assert without[0] >= NGINX_REFERENCE_PASSES, proc.stdout[-3000:]
    passed, failed, _ = with_overrides
    assert passed / (passed + failed) >= 0.995, proc.stdout[-3000:]
    assert re.fullmatch(r"\d+ passed, \d+ failed, \d+ skipped", lines[-1])


def test_every_override_has_a_reason() -> None:
    from waf.conformance import load_overrides

    overrides = load_overrides(OVERRIDES)
    assert overrides and all(len(o.reason) > 40 for o in overrides)


def test_override_without_reason_is_refused(tmp_path: Path) -> None:
    from waf.conformance import load_overrides

    bad = tmp_path / "o.yaml"
    bad.write_text("test_overrides:\n  - {rule_id: 920100, test_ids: [1]}\n")
    with pytest.raises(ValueError, match="has no reason"):
        load_overrides(bad)
