"""The conformance runner reads go-ftw test files as CRS 4 writes them
(tests/waf/test_conformance_runner.py for waf/conformance.py)."""
from __future__ import annotations

from pathlib import Path

from waf.conformance import build_request, load_cases


def test_yml_files_are_read_too(tmp_path: Path) -> None:
    (tmp_path / "REQUEST-920-PROTOCOL-ENFORCEMENT").mkdir()
    for name, rule in (("920100.yaml", 920100), ("920110.yml", 920110)):
        (tmp_path / "REQUEST-920-PROTOCOL-ENFORCEMENT" / name).write_text(
            f"meta: {{author: t}}\ntests:\n  - test_id: 1\n    stages:\n      - input: {{uri: /}}\n"
            f"        output: {{log: {{expect_ids: [{rule}]}}}}\n")
    assert sorted(c.rule_id for c in load_cases(tmp_path)) == [920100, 920110]


def test_autocomplete_headers_false_sends_the_request_as_written() -> None:
    given = {"method": "POST", "uri": "/", "headers": {"Host": "localhost"}, "data": "a=b c",
             "autocomplete_headers": False}
    request = build_request(given)
    assert request.headers == [("Host", "localhost")]  # no Content-Type, no Content-Length added
    assert request.body == b"a=b c"
    completed = build_request({**given, "autocomplete_headers": True})
    assert ("Content-Length", "5") in completed.headers
    assert ("Content-Type", "application/x-www-form-urlencoded") in completed.headers
