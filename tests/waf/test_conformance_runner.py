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


def test_an_override_can_name_a_class_of_requests_instead_of_test_ids(tmp_path: Path) -> None:
    """`when` conditions let one entry hold for any CRS release; unknown conditions are refused."""
    import pytest

    from waf.conformance import Case, Facts, _override_for, load_overrides

    path = tmp_path / "o.yaml"
    path.write_text(
        "test_overrides:\n"
        "  - {when: {method: CONNECT}, reason: 'a reverse proxy answers 405', output: {status: 405}}\n"
        "  - {rule_ids: [944100], when: {content_type: xml, expects_no_match: true}, reason: 'REQUEST_BODY is filled'}\n"
        "  - {rule_id: 920100, test_ids: [8], reason: 'a colon is legal in a path'}\n")
    overrides = load_overrides(path)
    case = Case(944100, "944100-11", 11, [], "f")
    xml = Facts("POST", "application/xml", False, False, expects_no_match=True)
    assert _override_for(case, overrides, xml) is overrides[1]
    assert _override_for(case, overrides, Facts("POST", "application/json", False, False, True)) is None
    assert _override_for(case, overrides, Facts("POST", "application/xml", False, False, False)) is None
    assert _override_for(Case(920100, "920100-4", 4, [], "f"), overrides, Facts("CONNECT", "", False, False)) is overrides[0]
    assert _override_for(Case(920100, "920100-8", 8, [], "f"), overrides, None) is overrides[2]
    path.write_text("test_overrides:\n  - {when: {colour: red}, reason: 'no such condition exists here'}\n")
    with pytest.raises(ValueError, match="unknown condition"):
        load_overrides(path)
