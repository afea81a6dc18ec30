"""Engine diagnostics go to the log, rate-limited (tests/waf/test_diagnostics.py for
waf/diagnostics.py): an XML body that breaks the parser never writes attacker text to stderr."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from waf import diagnostics
from waf.compiler import compile_rules
from waf.inspect import Inspection
from waf.policy import Policy


class _View:
    client_ip, client_port, server_ip, server_port = "192.0.2.1", 40000, "127.0.0.1", 80
    method, target, http_version = "POST", b"/api", "1.1"
    headers = [(b"host", b"app.test"), (b"content-type", b"text/xml"), (b"content-length", b"27")]


def _broken_xml(tmp_path: Path, times: int) -> None:
    (tmp_path / "xml.conf").write_text(
        'SecRule REQUEST_HEADERS:Content-Type "^text/xml" "id:299000,phase:1,pass,nolog,ctl:requestBodyProcessor=XML"\n')
    compiled = compile_rules(tmp_path, ["xml.conf"], Policy(mode="block"))
    for i in range(times):
        inspection = Inspection(compiled, _View(), f"t{i}")  # type: ignore[arg-type]
        inspection.request_headers()
        inspection.request_body(b"<a><b>attacker-text-XYZ</a>")
        inspection.finish()


def test_xml_parser_errors_are_logged_not_printed(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                  caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="edgeward.waf.engine")
    monkeypatch.setattr(diagnostics, "_SINK", diagnostics.RateLimitedLog())  # a fresh rate budget
    assert diagnostics.route_xml_errors()
    _broken_xml(tmp_path, 3)
    out, err = capfd.readouterr()
    assert "attacker-text-XYZ" not in err and "parser error" not in err, err
    messages = [r.getMessage() for r in caplog.records if r.name == "edgeward.waf.engine"]
    assert len(messages) == 3 and all("Opening and ending tag mismatch" in m for m in messages)


def test_without_routing_the_body_still_stays_off_stderr(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Debian's engine (3.0.9) sets a silent generic handler on its XML parser, so even without our
    structured handler nothing reaches stderr; the wheel used before printed the body here."""
    import ctypes

    lib = diagnostics._libxml2()
    assert lib is not None
    lib.xmlSetStructuredErrorFunc.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.xmlSetStructuredErrorFunc(None, None)
    try:
        _broken_xml(tmp_path, 1)
        assert "attacker-text-XYZ" not in capfd.readouterr().err
    finally:
        diagnostics._ROUTED.done = False
        assert diagnostics.route_xml_errors()


def test_diagnostics_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgeward.waf.engine")
    sink = diagnostics.RateLimitedLog(burst=5, window=3600)
    for i in range(25):
        sink(f"message {i}")
    assert len(caplog.records) == 5 and sink.suppressed == 20
    sink.started -= 3600  # the window has passed: the count of what was left out is logged first
    sink("next")
    assert [r.getMessage() for r in caplog.records[-2:]] == [
        "engine diagnostics: 20 more left out in the last 3600 s", "engine diagnostic: next"]
