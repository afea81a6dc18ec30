"""Run CRS's own regression tests (ftw YAML, and go-ftw's format of CRS 4) through the engine,
in-process, configured as CRS's CI configures it.

A test passes when the engine's log lines for its request satisfy ``log_contains`` /
``no_log_contains`` (or go-ftw's ``log.expect_ids`` / ``no_expect_ids``). Tests that only a web
server can judge (``expect_error``, or a ``status`` with no log expectation) are skipped with that
reason. When a file name appears more than once under the directory (Debian's back-ported test
files beside their v3.3.4 twins), the copy under the highest ``vX.Y.Z`` path wins.

Overrides (like go-ftw's platform overrides) declare known engine differences per test::

    test_overrides:
      - rule_id: 920100
        test_ids: [4]              # omitted: every test of the rule
        reason: "why this engine differs"
        output: {log_contains: ...}   # replaces the expectation; omitted: the test is skipped
"""
from __future__ import annotations

import base64
import json
import re
import socket
import time
from urllib.parse import parse_qsl, unquote, urlencode
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from .compiler import compile_rules
from .engine import Transaction
from .policy import Policy

# What CRS's CI sets (tests/regression for 3.3; the same values in CRS 4's go-ftw setup).
CI_DIRECTIVES = """\
SecAction "id:10090,phase:1,pass,nolog,t:none,setvar:tx.arg_length=400,setvar:tx.arg_name_length=100,\
setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.max_file_size=64100,setvar:tx.combined_file_sizes=65535,\
setvar:tx.max_num_args=255,setvar:tx.total_arg_length=64000"
"""
_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


@dataclass
class Case:
    rule_id: int
    test_id: str  # e.g. "942100-3"
    number: int
    stages: list[dict[str, Any]]
    file: str
    enabled: bool = True


@dataclass
class Result:
    case: Case
    status: str  # passed | failed | skipped
    reason: str = ""


@dataclass
class Summary:
    results: list[Result] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    def line(self) -> str:
        return f"{self.count('passed')} passed, {self.count('failed')} failed, {self.count('skipped')} skipped"


def _version_key(path: Path) -> tuple[int, ...]:
    for part in reversed(path.parts):
        m = _VERSION.match(part)
        if m:
            return tuple(int(x) for x in m.groups())
    return (0, 0, 0)


def test_files(directory: Path) -> list[Path]:
    chosen: dict[str, Path] = {}
    for path in sorted([*directory.rglob("*.yaml"), *directory.rglob("*.yml")]):  # CRS 4 stores some as .yml
        current = chosen.get(path.name)
        if current is None or _version_key(path) > _version_key(current):
            chosen[path.name] = path
    return sorted(chosen.values(), key=lambda p: p.name)


def load_cases(directory: Path) -> Iterator[Case]:
    for path in test_files(directory):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or "tests" not in doc:
            continue
        meta = doc.get("meta") or {}
        stem = path.stem
        rule_id = int(re.sub(r"\D.*", "", stem) or 0)
        for i, test in enumerate(doc.get("tests") or [], start=1):
            title = str(test.get("test_title") or f"{stem}-{test.get('test_id') or i}")
            suffix = re.search(r"-(\d+)$", title)
            number = int(test.get("test_id") or (suffix.group(1) if suffix else i))
            stages = [s.get("stage", s) if isinstance(s, dict) else s for s in test.get("stages") or []]
            enabled = meta.get("enabled") is not False and test.get("enabled") is not False
            yield Case(rule_id, title, number, stages, str(path), enabled)


def _bytes(value: Any) -> bytes:
    if isinstance(value, list):
        value = "\r\n".join(str(v) for v in value)
    text = "" if value is None else str(value)
    try:
        return text.encode("latin-1")  # YAML \xNN escapes are bytes
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


@dataclass(frozen=True)
class Answer:
    """What the appliance answered to one request sent over the wire."""

    status: int | None
    request_id: str | None
    rules: frozenset[int] | None = None  # the rule ids its access log recorded for the request


@dataclass
class Request:
    method: str
    uri: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    wire: bytes  # the bytes ftw would put on the socket


def build_request(given: dict[str, Any]) -> Request:
    raw = None
    if given.get("encoded_request"):
        raw = base64.b64decode(str(given["encoded_request"]))
    elif given.get("raw_request"):
        # ftw: raw_request.encode('utf-8').decode('unicode_escape'), then UTF-8 on the wire
        raw = str(given["raw_request"]).encode("utf-8").decode("unicode_escape").encode("utf-8")
    if raw is not None:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        method, uri = _text(parts[0]), _text(parts[1]) if len(parts) > 1 else "/"
        version = _text(parts[2]) if len(parts) > 2 else "HTTP/1.0"
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((_text(name.strip()), _text(value.strip())))
        return Request(method, uri, version.replace("HTTP/", ""), headers, body, raw)
    # ftw's "magic" (stop_magic: false; go-ftw's autocomplete_headers: true): a body gets a urlencoded
    # Content-Type, a urlencoded body that is not already percent-encoded is re-encoded, and
    # Content-Length is the character count. Either switch turned off sends the request as written.
    headers_in = {str(k): v for k, v in (given.get("headers") or {}).items()}
    data = given.get("data")
    if isinstance(data, list):
        data = "\r\n".join(str(d) for d in data)
    data = "" if data is None else str(data)
    magic = not given.get("stop_magic", False) and given.get("autocomplete_headers", True) is not False
    if data and magic:
        if "Content-Type" not in headers_in:
            headers_in["Content-Type"] = "application/x-www-form-urlencoded"
        if headers_in.get("Content-Type") == "application/x-www-form-urlencoded" and unquote(data) == data:
            pairs = parse_qsl(data)
            if pairs:
                data = urlencode(pairs)
        if "Content-Length" not in headers_in:
            headers_in["Content-Length"] = len(data)
    headers = [(k, str(v)) for k, v in headers_in.items()]
    body = data.encode(_charset(headers_in.get("Content-Type")) if magic else "utf-8", "replace")
    raw_version = str(given.get("version") if given.get("version") is not None else "HTTP/1.1")
    method, uri = str(given.get("method") or "GET"), str(given.get("uri") or "/")
    wire = (f"{method} {uri} {raw_version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
            + "\r\n").encode("utf-8") + body
    # A web server hands the engine header values without surrounding whitespace (RFC 9110 5.5).
    trimmed = [(k, v.strip(" \t")) for k, v in headers]
    return Request(method, uri, raw_version.replace("HTTP/", ""), trimmed, body, wire)


def _charset(content_type: object) -> str:
    m = re.search(r";\s?charset=(.*?)(?:$|;|\s)", str(content_type or ""))
    if m:
        name = m.group(1).replace("-", "_").lower()
        try:
            "".encode(name)
            return name
        except LookupError:
            pass
    return "utf-8"


def _expectations(output: dict[str, Any]) -> tuple[list[str], list[str]]:
    must = [str(output["log_contains"])] if output.get("log_contains") else []
    must_not = [str(output["no_log_contains"])] if output.get("no_log_contains") else []
    log = output.get("log") or {}
    must += [f'id "{i}"' for i in log.get("expect_ids") or []]
    must_not += [f'id "{i}"' for i in log.get("no_expect_ids") or []]
    if log.get("match_regex"):
        must.append(str(log["match_regex"]))
    if log.get("no_match_regex"):
        must_not.append(str(log["no_match_regex"]))
    return must, must_not


class Runner:
    """Evaluates cases against one compiled rule set in DetectionOnly at paranoia 4."""

    def __init__(self, bundle_dir: Path, load_order: list[str], http: tuple[str, int] | None = None,
                 access_log: Path | None = None) -> None:
        self.http = http
        self.access_log = access_log
        self.answers: dict[tuple[str, int], Answer] = {}  # (test id, stage): what the appliance answered
        policy = Policy(mode="detect", paranoia=4, directives=CI_DIRECTIVES)
        self.compiled = compile_rules(bundle_dir, load_order, policy, text_log=True)

    @property
    def over_the_wire(self) -> bool:
        """go-ftw's rule-id expectations are judged from the appliance's access log, as go-ftw
        judges them from the web server's error log."""
        return self.http is not None and self.access_log is not None

    def send_all(self, cases: list[Case], timeout: float = 30.0) -> None:
        """Send every stage that carries go-ftw ``log`` expectations, then read the rule ids the
        access log recorded for each answer (the log is written in batches, so all at once)."""
        assert self.access_log is not None
        for case in cases:
            if not case.enabled:
                continue
            for index, stage in enumerate(case.stages):
                if isinstance((stage.get("output") or {}).get("log"), dict):
                    try:
                        request = build_request(stage.get("input") or {})
                    except (ValueError, IndexError):
                        continue
                    self.answers[(case.test_id, index)] = self.exchange(request)
        wanted = {a.request_id for a in self.answers.values() if a.request_id}
        found: dict[str, frozenset[int]] = {}
        deadline = time.monotonic() + timeout
        while True:
            found = _rules_by_request(self.access_log, wanted)
            if len(found) == len(wanted) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        self.answers = {key: Answer(a.status, a.request_id, found.get(a.request_id or "")) for key, a in self.answers.items()}

    def facts(self, case: Case) -> Facts | None:
        """The last stage's method and Content-Type, and whether the appliance's listener refused
        it (an answer without X-Request-Id); None when the request cannot be built."""
        if not case.stages:
            return None
        index = len(case.stages) - 1
        try:
            request = build_request(case.stages[index].get("input") or {})
        except (ValueError, IndexError):
            return None
        content_type = next((v for k, v in request.headers if k.lower() == "content-type"), "")
        answer = self.answers.get((case.test_id, index))
        refused = answer is not None and answer.request_id is None and answer.status is not None
        before_waf = (answer is not None and answer.request_id is not None and answer.rules is None
                      and (answer.status or 0) >= 400)
        log = (case.stages[index].get("output") or {}).get("log") or {}
        silent = case.rule_id in {int(i) for i in log.get("no_expect_ids") or []}
        return Facts(request.method, content_type, refused, before_waf, silent)

    def _judge_wire(self, case: Case, index: int, output: dict[str, Any]) -> str | None:
        """Why the stage fails over the wire, or None when it passes. A ``match_regex`` is about
        log text, which the appliance never writes (matched data stays out of its logs): it is
        judged on the engine's own log lines for the same request, run in-process."""
        answer = self.answers.get((case.test_id, index))
        if answer is None:
            return "request cannot be built"
        if "status" in output:
            wanted = output["status"] if isinstance(output["status"], list) else [output["status"]]
            if answer.status not in wanted:
                return f"status {answer.status}, expected {wanted}"
        log = output.get("log") or {}
        rules = answer.rules or frozenset()
        if answer.rules is None and (log.get("expect_ids") or log.get("no_expect_ids")):
            return f"no access log line for the answer (status {answer.status}, request id {answer.request_id})"
        missing = [int(i) for i in log.get("expect_ids") or [] if int(i) not in rules]
        if missing:
            return f"rules {missing} did not match (matched: {sorted(rules)})"
        unwanted = [int(i) for i in log.get("no_expect_ids") or [] if int(i) in rules]
        if unwanted:
            return f"rules {unwanted} matched"
        if log.get("match_regex") or log.get("no_match_regex"):
            given = case.stages[index].get("input") or {}
            text = self.log_for(build_request(given), int(given.get("port") or 80))
            if log.get("match_regex") and not re.search(str(log["match_regex"]), text):
                return f"the engine's log lacks /{log['match_regex']}/"
            if log.get("no_match_regex") and re.search(str(log["no_match_regex"]), text):
                return f"the engine's log has /{log['no_match_regex']}/"
        return None

    def log_for(self, request: Request, port: int) -> str:
        """The engine's log lines for the request, as nginx would write them to its error log."""
        tx = Transaction(self.compiled.engine, self.compiled.rules, "conformance")
        tx.request_headers("127.0.0.1", 40000, "127.0.0.1", port, request.uri.encode("utf-8"), request.method,
                           request.version, [(n.encode("utf-8"), v.encode("utf-8")) for n, v in request.headers])
        tx.request_body(request.body)
        tx.logging()
        lines = [m.text.decode("utf-8", "backslashreplace") for m in tx.matches()]
        tx.close()
        return "\n".join(lines)

    def status_over_http(self, request: Request) -> int | None:
        """Send the request as ftw would to a running appliance; the status, or None if it closed."""
        return self.exchange(request).status

    def exchange(self, request: Request) -> Answer:
        """Send the request's bytes to the appliance; its status and X-Request-Id (None, None if it
        closed without answering)."""
        assert self.http is not None
        data = b""
        with socket.create_connection(self.http, timeout=10) as sock:
            sock.sendall(request.wire)
            try:
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        parts = head[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return Answer(None, None)
        request_id = next((line.split(b":", 1)[1].strip().decode("latin-1") for line in head[1:]
                           if line.lower().startswith(b"x-request-id:")), None)
        return Answer(int(parts[1]), request_id)

    def run(self, case: Case, output_override: dict[str, Any] | None = None) -> Result:
        if not case.enabled:
            return Result(case, "skipped", "disabled upstream (meta.enabled: false)")
        judged = False
        for index, stage in enumerate(case.stages):
            given = stage.get("input") or {}
            output = output_override if output_override is not None and index == len(case.stages) - 1 else (stage.get("output") or {})
            if self.over_the_wire and isinstance(output.get("log"), dict) and (case.test_id, index) in self.answers:
                failure = self._judge_wire(case, index, output)
                if failure:
                    return Result(case, "failed", failure)
                judged = True
                continue
            must, must_not = _expectations(output)
            web_only = output.get("expect_error") or (not must and not must_not and output.get("status") is not None)
            if web_only:
                if self.http is None:
                    return Result(case, "skipped", "needs a web server's answer (run with --http)")
                status = self.status_over_http(build_request(given))
                if output.get("expect_error"):
                    if status is not None and status < 400:
                        return Result(case, "failed", f"expected the server to refuse, got {status}")
                else:
                    wanted = output["status"] if isinstance(output["status"], list) else [output["status"]]
                    if status not in wanted:
                        return Result(case, "failed", f"status {status}, expected {wanted}")
                judged = True
                continue
            if not must and not must_not:
                continue
            try:
                request = build_request(given)
            except (ValueError, IndexError) as exc:
                return Result(case, "skipped", f"request cannot be built without a web server: {exc}")
            log = self.log_for(request, int(given.get("port") or 80))
            for pattern in must:
                if not re.search(pattern, log):
                    return Result(case, "failed", f"log lacks /{pattern}/")
            for pattern in must_not:
                if re.search(pattern, log):
                    return Result(case, "failed", f"log has /{pattern}/")
            judged = True
        return Result(case, "passed") if judged else Result(case, "skipped", "no expectation the engine can judge")


@dataclass(frozen=True)
class Override:
    """A known difference. It applies to a case when every condition given holds: the rule (one id
    or several), the test numbers, and ``when``, which describes the request or its answer so that
    one entry covers a class of tests in any CRS release, not only the test ids of one:

    - ``refused_by_listener: true``: the appliance answered without an X-Request-Id (its HTTP
      parser refused the request before any stage ran);
    - ``refused_before_waf: true``: the appliance answered with an error and an X-Request-Id, but
      its access log shows the WAF never ran (a request check refused it first);
    - ``method: NAME``: the request's method;
    - ``content_type: REGEX``: searched in the request's Content-Type header;
    - ``expects_no_match: true``: the test expects its own rule not to match (``no_expect_ids``).
    """

    rule_ids: tuple[int, ...]
    test_ids: tuple[int, ...]
    reason: str
    output: dict[str, Any] | None
    when: dict[str, Any] = field(default_factory=dict)

    @property
    def rule_id(self) -> int:
        return self.rule_ids[0] if self.rule_ids else 0


_CONDITIONS = {"refused_by_listener", "refused_before_waf", "method", "content_type", "expects_no_match"}


def load_overrides(path: Path) -> list[Override]:
    doc = yaml.safe_load(path.read_text()) or {}
    out = []
    for entry in doc.get("test_overrides") or []:
        if not entry.get("reason"):
            raise ValueError(f"{path}: override for rule {entry.get('rule_id')} has no reason")
        when = dict(entry.get("when") or {})
        unknown = set(when) - _CONDITIONS
        if unknown:
            raise ValueError(f"{path}: unknown condition(s) {sorted(unknown)} (known: {sorted(_CONDITIONS)})")
        rules = entry.get("rule_ids") or ([entry["rule_id"]] if entry.get("rule_id") is not None else [])
        if not rules and not when:
            raise ValueError(f"{path}: an override needs a rule_id, rule_ids or a when condition")
        out.append(Override(tuple(int(r) for r in rules), tuple(int(t) for t in entry.get("test_ids") or ()),
                            str(entry["reason"]), entry.get("output"), when))
    return out


@dataclass(frozen=True)
class Facts:
    """What an override's ``when`` can ask about a case (its last stage)."""

    method: str
    content_type: str
    refused_by_listener: bool
    refused_before_waf: bool
    expects_no_match: bool = False


def _override_for(case: Case, overrides: Iterable[Override], facts: Facts | None = None) -> Override | None:
    for o in overrides:
        if o.rule_ids and case.rule_id not in o.rule_ids:
            continue
        if o.test_ids and case.number not in o.test_ids:
            continue
        if o.when and (facts is None or not _holds(o.when, facts)):
            continue
        return o
    return None


def _holds(when: dict[str, Any], facts: Facts) -> bool:
    if "refused_by_listener" in when and bool(when["refused_by_listener"]) != facts.refused_by_listener:
        return False
    if "refused_before_waf" in when and bool(when["refused_before_waf"]) != facts.refused_before_waf:
        return False
    if "expects_no_match" in when and bool(when["expects_no_match"]) != facts.expects_no_match:
        return False
    if "method" in when and str(when["method"]).upper() != facts.method.upper():
        return False
    if "content_type" in when and not re.search(str(when["content_type"]), facts.content_type, re.IGNORECASE):
        return False
    return True


def _rules_by_request(access_log: Path, wanted: set[str]) -> dict[str, frozenset[int]]:
    found: dict[str, frozenset[int]] = {}
    try:
        lines = access_log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("request_id") in wanted and "waf_rules" in record:
            found[record["request_id"]] = frozenset(int(r) for r in record["waf_rules"])
    return found


def run_suite(
    directory: Path, bundle_dir: Path, load_order: list[str], overrides: list[Override] | None = None,
    progress: Callable[[Result], None] | None = None, http: tuple[str, int] | None = None,
    access_log: Path | None = None,
) -> tuple[Summary, Summary | None]:
    """Run every case; return (summary without overrides, summary with them, if any given).
    With ``http`` and ``access_log``, go-ftw's rule-id expectations are judged over the wire."""
    runner = Runner(bundle_dir, load_order, http, access_log)
    cases = list(load_cases(directory))
    if runner.over_the_wire:
        runner.send_all(cases)
    plain, applied = Summary(), Summary() if overrides is not None else None
    for case in cases:
        result = runner.run(case)
        plain.results.append(result)
        if progress:
            progress(result)
        if applied is not None:
            o = _override_for(case, overrides or [], runner.facts(case))
            if o is None:
                applied.results.append(result)
            elif o.output is None:
                applied.results.append(Result(case, "skipped", f"override: {o.reason}"))
            else:
                applied.results.append(runner.run(case, o.output))
    return plain, applied
