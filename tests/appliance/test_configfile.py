"""`edgeward check` and config loading: every problem as FILE:LINE: key: problem, exit 2."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance.config.loader import load_config
from appliance.errors import ConfigError

from ..harness import EDGEWARD

MINIMAL = """\
listen: 127.0.0.1:8080
state_dir: ./var              # bundle store, audit database, keys
admin:
  listen: 127.0.0.1:8001
  token_env: EDGEWARD_ADMIN_TOKEN
domains:
  - hosts: [app.example.test]
    upstream: http://127.0.0.1:9001
    waf: {mode: block}        # block | detect | off; bundle, paranoia, thresholds, exclusions optional
"""


def check(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    path = tmp_path / "edgeward.yaml"
    path.write_text(text)
    proc = subprocess.run([EDGEWARD, "check", "-c", str(path)], capture_output=True, text=True, env=env)
    return proc.returncode, proc.stderr.replace(str(path), "FILE")


def test_minimal_file_from_architecture_is_valid(tmp_path: Path, crs_state: Path) -> None:
    import shutil

    shutil.copytree(crs_state, tmp_path / "var")  # waf: {mode: block} needs an active bundle
    code, err = check(tmp_path, MINIMAL)
    assert code == 0, err
    config = load_config(tmp_path / "edgeward.yaml")
    assert config.state_dir == tmp_path / "var"  # relative to the config file, not the CWD
    assert config.domains[0].upstream.urls == ["http://127.0.0.1:9001"]


BAD = [
    ("unknown key", MINIMAL + "bogus: 1\n", "FILE:10: bogus: unknown key"),
    ("nested unknown key", MINIMAL.replace("    waf:", "    upstreem: http://x\n    waf:"),
     "FILE:9: domains[0].upstreem: unknown key"),
    ("wrong type", MINIMAL.replace("listen: 127.0.0.1:8080", "workers: two\nlisten: 127.0.0.1:8080"),
     "FILE:1: workers: Input should be a valid integer"),
    ("bad url", MINIMAL.replace("http://127.0.0.1:9001", "ftp://127.0.0.1:9001"),
     "FILE:8: domains[0].upstream.urls: 'ftp://127.0.0.1:9001' is not an http:// or https:// URL"),
    ("bad port", MINIMAL.replace("127.0.0.1:8080", "127.0.0.1:99999"), "FILE:1: listen: port 99999 is out of range"),
    ("duplicate host", MINIMAL + "  - hosts: [APP.example.test]\n    upstream: http://127.0.0.1:9002\n",
     "FILE:10: domains[1].hosts[0]: duplicate host 'app.example.test' (also in domains[0])"),
    ("unreadable tls", MINIMAL + "tls: {cert: /nonexistent/tls.crt, key: /nonexistent/tls.key}\n",
     "FILE:10: tls.cert: cannot read file '/nonexistent/tls.crt'"),
    ("duplicate yaml key", MINIMAL + "listen: 127.0.0.1:8081\n", "FILE:10: listen: duplicate key"),
    ("missing env", MINIMAL.replace("http://127.0.0.1:9001", "${EDGEWARD_TEST_UNSET_VAR}"),
     "FILE:8: domains[0].upstream: environment variable EDGEWARD_TEST_UNSET_VAR is not set"),
    ("bad duration", MINIMAL + "timeouts: {read: soon}\n", "FILE:10: timeouts.read: 'soon' is not a duration"),
    ("no domains", "listen: 127.0.0.1:8080\n", "domains: required key is missing"),
    ("yaml syntax", MINIMAL + "domains: [\n", "FILE:11: (yaml): invalid YAML"),
    ("listener clash", MINIMAL.replace("127.0.0.1:8001", "127.0.0.1:8080"),
     "FILE:4: admin.listen: 127.0.0.1:8080 is already used by listen"),
    ("bad wildcard", MINIMAL.replace("[app.example.test]", "['*app.example.test']"),
     "FILE:7: domains[0].hosts: '*app.example.test' is not a host name"),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_problems_are_reported_with_file_line_and_key(tmp_path: Path, case: str, text: str, expected: str) -> None:
    code, err = check(tmp_path, text)
    assert code == 2
    assert expected in err, err
    assert "Traceback" not in err


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = MINIMAL.replace("127.0.0.1:8080", "nowhere").replace("http://127.0.0.1:9001", "ftp://x") + "bogus: 1\n"
    code, err = check(tmp_path, text)
    assert code == 2
    assert len(err.strip().splitlines()) == 3, err


def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    import os

    text = MINIMAL.replace("http://127.0.0.1:9001", "${EW_UPSTREAM}").replace(
        "127.0.0.1:8080", "${EW_LISTEN:-127.0.0.1:8088}").replace("{mode: block}", "{mode: off}")
    code, err = check(tmp_path, text, env={**os.environ, "EW_UPSTREAM": "http://10.1.2.3:7000"})
    assert code == 0, err
    os.environ["EW_UPSTREAM"] = "http://10.1.2.3:7000"
    try:
        config = load_config(tmp_path / "edgeward.yaml")
    finally:
        del os.environ["EW_UPSTREAM"]
    assert config.domains[0].upstream.urls == ["http://10.1.2.3:7000"]
    assert config.listen == "127.0.0.1:8088"


def test_yaml_off_means_off(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL.replace("{mode: block}", "{mode: off}"))
    assert load_config(path).domains[0].waf.mode == "off"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_waf_without_an_active_bundle_is_refused(tmp_path: Path) -> None:
    code, err = check(tmp_path, MINIMAL)
    assert code == 2
    assert "FILE:9: domains[0].waf: no rule bundle is active" in err


def test_bad_waf_directives_report_the_parser_error(tmp_path: Path, crs_state: Path) -> None:
    import shutil

    shutil.copytree(crs_state, tmp_path / "var")
    text = MINIMAL.replace("waf: {mode: block}", "waf: {mode: block, directives: 'SecBogusDirective On'}")
    code, err = check(tmp_path, text)
    assert code == 2
    assert "FILE:9: domains[0].waf: directives:" in err and "SecBogusDirective" in err, err


def test_every_problem_is_reported_in_one_run(tmp_path: Path) -> None:
    """Type errors do not hide cross-field problems (duplicate hosts and routes, listener clashes)."""
    text = MINIMAL.replace("listen: 127.0.0.1:8080", "workers: two\nlisten: 127.0.0.1:8080").replace(
        "  listen: 127.0.0.1:8001", "  listen: 0.0.0.0:8080") + (
        "  - hosts: [app.example.test]\n    upstream: ftp://nope\n"
        "    routes:\n      - {path: /a}\n      - {path: /a}\n")
    code, err = check(tmp_path, text)
    assert code == 2
    for expected in ("FILE:1: workers: Input should be a valid integer",
                     "admin.listen: 0.0.0.0:8080 is already used by listen (127.0.0.1:8080)",
                     "domains[1].hosts[0]: duplicate host 'app.example.test' (also in domains[0])",
                     "domains[1].upstream.urls: 'ftp://nope' is not an http:// or https:// URL",
                     "domains[1].routes[1].path: route path '/a' appears twice (also routes[0])"):
        assert expected in err, err


@pytest.mark.parametrize(("public", "admin", "clash"), [
    ("127.0.0.1:8080", "0.0.0.0:8080", True), ("0.0.0.0:8080", "127.0.0.1:8080", True),
    ("[::]:8080", "127.0.0.1:8080", True), ("127.0.0.1:8080", "127.0.0.2:8080", False),
    ("127.0.0.1:8080", "0.0.0.0:8081", False),
])
def test_wildcard_listeners_cover_every_address_of_their_port(tmp_path: Path, public: str, admin: str,
                                                            clash: bool) -> None:
    from appliance.config.checks import listener_clashes

    problems = listener_clashes({"listen": public, "admin": {"listen": admin}})
    assert bool(problems) is clash, problems


def test_catch_all_host_is_accepted_once(tmp_path: Path) -> None:
    text = MINIMAL.replace("waf: {mode: block}", "waf: {mode: off}") + (
        "  - hosts: ['*']\n    upstream: http://127.0.0.1:9002\n")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_config(path).domains[1].hosts == ["*"]
    code, err = check(tmp_path, text + "  - hosts: ['*']\n    upstream: http://127.0.0.1:9003\n")
    assert code == 2 and "duplicate host '*'" in err


def test_require_signature_without_trusted_keys_is_refused(tmp_path: Path) -> None:
    code, err = check(tmp_path, MINIMAL.replace("{mode: block}", "{mode: off}") + "rules: {require_signature: true}\n")
    assert code == 2 and "FILE:10: rules: require_signature needs trusted_keys" in err, err
