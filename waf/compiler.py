"""Compile a rule bundle plus a policy into a ModSecurity rule set.

Load order, as nginx+ModSecurity with CRS: the engine settings (those of ModSecurity's
``modsecurity.conf-recommended``, including its request-body-processor rules, which do not fire on
a body the engine cut at ``SecRequestBodyLimit``: with ``inspect_partial`` a parser error there is
the cut, not the client), the bundle's
``crs-setup.conf``, the policy's settings as one ``SecAction``, path-scoped exclusions (``ctl:``),
the bundle's rules, global exclusions (``SecRuleRemove*``/``SecRuleUpdateTarget*``), then the
operator's raw ``directives``. Generated rules use ids 10000-10999 (CRS leaves 1-99999 to local use).
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from .engine import Engine, RuleSet
from .policy import Exclusion, Policy

POLICY_RULE_ID = 10001
EXCLUSION_RULE_ID = 10100
HIT_RULE_ID = 10600  # one per named exclusion: logs when it applied, never changes a verdict

ENGINE_SETTINGS = """\
SecRuleEngine {engine}
SecRequestBodyAccess On
SecRequestBodyLimit {body_limit}
SecRequestBodyLimitAction {body_limit_action}
SecResponseBodyAccess {response_access}
SecResponseBodyMimeType text/plain text/html text/xml application/json
SecResponseBodyLimit {response_body_limit}
SecResponseBodyLimitAction ProcessPartial
SecPcreMatchLimit {pcre}
SecPcreMatchLimitRecursion {pcre}
SecArgumentsLimit {arguments}
SecRequestBodyJsonDepthLimit {json_depth}
SecAuditEngine Off
SecCookieFormat 0
SecArgumentSeparator &
SecStatusEngine Off
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\\+|/)|text/)xml" \\
  "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" \\
  "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule &ARGS "@ge {arguments}" \\
  "id:200007,phase:2,t:none,log,deny,status:400,msg:'Failed to fully parse request body due to large argument count',severity:2"
SecRule REQBODY_ERROR "!@eq 0" \\
  "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',logdata:'%{{reqbody_error_msg}}',severity:2,chain"
  SecRule INBOUND_DATA_ERROR "@eq 0" "t:none"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" \\
  "id:200003,phase:2,t:none,log,deny,status:400,chain, \\
  msg:'Multipart request body failed strict validation: \\
  PE %{{REQBODY_PROCESSOR_ERROR}}, BQ %{{MULTIPART_BOUNDARY_QUOTED}}, BW %{{MULTIPART_BOUNDARY_WHITESPACE}}, \\
  DB %{{MULTIPART_DATA_BEFORE}}, DA %{{MULTIPART_DATA_AFTER}}, HF %{{MULTIPART_HEADER_FOLDING}}, \\
  LF %{{MULTIPART_LF_LINE}}, SM %{{MULTIPART_MISSING_SEMICOLON}}, IQ %{{MULTIPART_INVALID_QUOTING}}, \\
  IP %{{MULTIPART_INVALID_PART}}, IH %{{MULTIPART_INVALID_HEADER_FOLDING}}, FL %{{MULTIPART_FILE_LIMIT_EXCEEDED}}'"
  SecRule INBOUND_DATA_ERROR "@eq 0" "t:none"
SecRule MULTIPART_UNMATCHED_BOUNDARY "@eq 1" \\
  "id:200004,phase:2,t:none,log,deny,msg:'Multipart parser detected a possible unmatched boundary.',chain"
  SecRule INBOUND_DATA_ERROR "@eq 0" "t:none"
SecRule TX:/^MSC_/ "!@streq 0" \\
  "id:200005,phase:2,t:none,deny,msg:'ModSecurity internal error flagged: %{{MATCHED_VAR_NAME}}'"
"""


@dataclass(frozen=True)
class CompiledRules:
    """A compiled rule set and the engine instance its transactions run on. ``tags`` holds each
    rule's tags as written in its file: Debian's engine (3.0.9) leaves the tags of a
    non-disruptive rule's message empty (only the blocking rule's message carries them)."""

    engine: Engine
    rules: RuleSet
    policy: Policy
    rule_count: int
    tags: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    hit_rules: Mapping[int, str] = field(default_factory=dict)  # rule id -> the named exclusion it counts


_RULE_ID = re.compile(r"\bid:'?(\d+)")
_TAG = re.compile(r"\btag:(?:'([^']*)'|([^,\"'\s]+))")


def rule_tags(text: str) -> dict[int, tuple[str, ...]]:
    """Each rule id's ``tag:`` actions; a chained rule's tags belong to the chain's first rule."""
    out: dict[int, tuple[str, ...]] = {}
    current: int | None = None
    for directive in re.split(r"(?<!\\)\n", text):
        if not directive.lstrip().startswith(("SecRule", "SecAction")):
            continue
        found = _RULE_ID.search(directive)
        if found:
            current = int(found.group(1))
        if current is None:
            continue
        tags = tuple(a or b for a, b in _TAG.findall(directive))
        if tags:
            out[current] = out.get(current, ()) + tags
    return out


def engine_version() -> str:
    return Engine().version()


def engine_settings(policy: Policy) -> str:
    return ENGINE_SETTINGS.format(
        engine="On" if policy.mode == "block" else "DetectionOnly",
        body_limit=policy.body_limit,
        body_limit_action="Reject" if policy.body_limit_action == "reject" else "ProcessPartial",
        response_access="On" if policy.inspect_response else "Off",
        response_body_limit=policy.response_body_limit,
        pcre=policy.pcre_match_limit,
        arguments=policy.arguments_limit,
        json_depth=policy.json_depth_limit,
    )


def policy_action(policy: Policy) -> str:
    sets = [
        f"setvar:tx.paranoia_level={policy.paranoia}",
        f"setvar:tx.blocking_paranoia_level={policy.paranoia}",
        f"setvar:tx.executing_paranoia_level={policy.detection_level}",
        f"setvar:tx.detection_paranoia_level={policy.detection_level}",
        f"setvar:tx.inbound_anomaly_score_threshold={policy.inbound_threshold}",
        f"setvar:tx.outbound_anomaly_score_threshold={policy.outbound_threshold}",
    ]
    if policy.allowed_methods is not None:
        sets.append(f"setvar:'tx.allowed_methods={' '.join(policy.allowed_methods)}'")
    if policy.allowed_content_types is not None:
        types = " ".join(f"|{t.lower()}|" for t in policy.allowed_content_types)
        sets.append(f"setvar:'tx.allowed_request_content_type={types}'")
    return f'SecAction "id:{POLICY_RULE_ID},phase:1,pass,nolog,t:none,{",".join(sets)}"\n'


def exclusion_rules(exclusions: Sequence[Exclusion]) -> tuple[str, str]:
    """(rules that go before the bundle, directives that go after it)."""
    before: list[str] = []
    after: list[str] = []
    next_id = EXCLUSION_RULE_ID
    for ex in exclusions:
        if ex.path or ex.methods:
            actions = [
                f"ctl:ruleRemoveTargetById={rid};{ex.target}" if ex.target else f"ctl:ruleRemoveById={rid}"
                for rid in ex.rules
            ] + [
                f"ctl:ruleRemoveTargetByTag={tag};{ex.target}" if ex.target else f"ctl:ruleRemoveByTag={tag}"
                for tag in ex.tags
            ]
            conditions = []
            if ex.path:
                conditions.append(f'REQUEST_FILENAME "@beginsWith {ex.path}"')
            if ex.methods:
                conditions.append(f'REQUEST_METHOD "@within {" ".join(ex.methods)}"')
            head = f"id:{next_id},phase:1,pass,nolog,t:none,{','.join(actions)}"
            if len(conditions) == 2:
                before.append(f'SecRule {conditions[0]} "{head},chain"\n  SecRule {conditions[1]} "t:none"\n')
            else:
                before.append(f'SecRule {conditions[0]} "{head}"\n')
            next_id += 1
        else:
            for rid in ex.rules:
                after.append(f'SecRuleUpdateTargetById {rid} "!{ex.target}"\n' if ex.target else f"SecRuleRemoveById {rid}\n")
            for tag in ex.tags:
                after.append(f'SecRuleUpdateTargetByTag "{tag}" "!{ex.target}"\n' if ex.target else f'SecRuleRemoveByTag "{tag}"\n')
    return "".join(before), "".join(after)


_PRESENCE = ("ARGS:", "ARGS_NAMES:", "REQUEST_COOKIES:", "REQUEST_COOKIES_NAMES:", "REQUEST_HEADERS:", "FILES:")


def hit_rules(exclusions: Sequence[Exclusion]) -> tuple[str, dict[int, str]]:
    """Rules that match (log, pass) when a named exclusion applied to a request: its path and
    methods, and its target present. Phase 2, so body arguments count; placed before the bundle."""
    out: list[str] = []
    names: dict[int, str] = {}
    for ex in exclusions:
        if ex.name is None:
            continue
        rule_id = HIT_RULE_ID + len(names)
        conditions = []
        if ex.path:
            conditions.append(f'REQUEST_FILENAME "@beginsWith {ex.path}"')
        if ex.methods:
            conditions.append(f'REQUEST_METHOD "@within {" ".join(ex.methods)}"')
        if ex.target and ex.target.startswith(_PRESENCE):
            conditions.append(f'&{ex.target} "@gt 0"')
        head = f"id:{rule_id},phase:2,pass,log,t:none,msg:'exclusion applied'"
        if not conditions:
            out.append(f'SecAction "{head}"\n')
        else:
            chain = [f'SecRule {c} "{head if i == 0 else "t:none"}{",chain" if i < len(conditions) - 1 else ""}"'
                     for i, c in enumerate(conditions)]
            out.append("\n  ".join(chain) + "\n")
        names[rule_id] = ex.name
    return "".join(out), names


def compile_rules(bundle_dir: Path, load_order: Sequence[str], policy: Policy, text_log: bool = False) -> CompiledRules:
    """Compile; raise WafCompileError with ModSecurity's parser message. ``text_log`` keeps the
    engine's log line for each match (the conformance runner reads them, as ftw reads nginx's
    error log)."""
    engine = Engine(text=text_log)
    rules = RuleSet()
    tags: dict[int, tuple[str, ...]] = {}
    count = rules.add(engine_settings(policy), "engine settings")
    before, after = exclusion_rules(policy.exclusions)
    counting, hits = hit_rules(policy.exclusions)
    before += counting
    files = list(load_order)
    setup = [f for f in files if f == "crs-setup.conf"]
    for rel in setup:
        count += rules.add_file(bundle_dir / rel, rel)
    count += rules.add(policy_action(policy), "policy")
    if before:
        count += rules.add(before, "exclusions")
    for rel in files:
        if rel not in setup:
            count += rules.add_file(bundle_dir / rel, rel)
            tags.update(rule_tags((bundle_dir / rel).read_text(encoding="utf-8", errors="replace")))
    if after:
        count += rules.add(after, "exclusions")
    if policy.directives.strip():
        count += rules.add(policy.directives, "directives")
        tags.update(rule_tags(policy.directives))
    return CompiledRules(engine, rules, policy, count, tags, hits)


class RuleSetCache:
    """One compiled rule set per distinct (bundle digest, policy), shared by all who ask."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, Policy], CompiledRules] = {}
        self._lock = threading.Lock()

    def get(self, digest: str, bundle_dir: Path | Callable[[], AbstractContextManager[Path]],
            load_order: Sequence[str], policy: Policy) -> CompiledRules:
        """``bundle_dir`` may be a context manager factory that yields the directory to compile from
        (a private copy of exactly the bytes that were verified); it is entered only on a miss."""
        key = (digest, policy)
        with self._lock:
            found = self._compiled.get(key)
            if found is None:
                if isinstance(bundle_dir, Path):
                    found = compile_rules(bundle_dir, load_order, policy)
                else:
                    with bundle_dir() as directory:
                        found = compile_rules(directory, load_order, policy)
                self._compiled[key] = found
            return found

    def retain(self, keys: set[tuple[str, Policy]]) -> None:
        """Drop compiled sets no current config uses (after a reload)."""
        with self._lock:
            for key in list(self._compiled):
                if key not in keys:
                    del self._compiled[key]

    def __len__(self) -> int:
        return len(self._compiled)
