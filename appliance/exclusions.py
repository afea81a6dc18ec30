"""WAF exclusions made from audit records (``edgeward audit exclude``, ``POST /api/audit/{id}/exclusion``).

They live in ``state_dir/waf-exclusions.json``, managed by Edgeward, not in the operator's config
file: rewriting that YAML would lose its comments and layout. Each one names its domain and is
added to that domain's WAF policy (every route) when the config is built; one past its expiry
time is left out. Workers rebuild when the file changes (it is part of the reload signature).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from waf.policy import Exclusion

from appliance.config.schema import DomainConfig

_SCORE_RULES = {949110, 959100, 980130, 980140, 980170}
_TARGET = re.compile(r"^(ARGS|ARGS_NAMES|REQUEST_COOKIES|REQUEST_COOKIES_NAMES|REQUEST_HEADERS|FILES|XML):[^\s\"',|;]+$")
_SAFE_PATH = re.compile(r"^/[^\s\"',]*$")


class ExclusionError(Exception):
    """An exclusion cannot be proposed from this record (a clear message for the operator)."""


def managed_path(state_dir: Path) -> Path:
    return state_dir / "waf-exclusions.json"


def load(state_dir: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(managed_path(state_dir).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ExclusionError(f"{managed_path(state_dir)}: unreadable ({exc})") from exc
    return list(data.get("exclusions") or [])


def exclusion_id(entry: dict[str, Any]) -> str:
    """The name its hits are counted under (entries of the first version have no ``id``)."""
    return str(entry.get("id") or "ex-" + str(entry["from_record"]))


def for_domain(state_dir: Path, domain: DomainConfig, now: float | None = None) -> tuple[Exclusion, ...]:
    """The managed exclusions of ``domain`` (matched by any of its hosts) that have not expired."""
    now = time.time() if now is None else now
    hosts = set(domain.hosts)
    return tuple(
        Exclusion(tuple(e["rules"]), (), e.get("target"), e.get("path"), tuple(e.get("methods") or ()), exclusion_id(e))
        for e in load(state_dir)
        if e["domain"] in hosts and (e.get("expires") is None or e["expires"] > now)
    )


def propose(record: dict[str, Any], reason: str, author: str, rule: int | None = None, target: str | None = None,
            scope: str = "path", expires: float | None = None) -> dict[str, Any]:
    """The narrowest exclusion that would have let the recorded request through: its rule, on the
    variable it matched, on its domain, path and method."""
    if not reason.strip():
        raise ExclusionError("an exclusion needs a reason")
    matches = [m for m in (record.get("waf") or {}).get("matches", []) if m["rule_id"] not in _SCORE_RULES]
    if not matches:
        raise ExclusionError(f"record {record['id']} has no WAF rule match to exclude")
    if rule is None:
        chosen = min(matches, key=lambda m: (m["severity"] or 9, m["rule_id"]))
    else:
        found = [m for m in matches if m["rule_id"] == rule]
        if not found:
            raise ExclusionError(f"rule {rule} did not match in record {record['id']} "
                                 f"(matched: {sorted({m['rule_id'] for m in matches})})")
        chosen = found[0]
    if target is None and _TARGET.match(chosen.get("variable") or ""):
        target = chosen["variable"]
    if target is not None and not _TARGET.match(target):
        raise ExclusionError(f"{target!r} is not a target such as ARGS:q, REQUEST_COOKIES:sid or REQUEST_HEADERS:X-Name")
    entry: dict[str, Any] = {"domain": record["domain"], "rules": [chosen["rule_id"]], "target": target}
    if scope == "path":
        path = record["uri"].split("?", 1)[0]
        if not _SAFE_PATH.match(path):
            raise ExclusionError(f"the path {path!r} cannot scope an exclusion; use --scope domain")
        entry["path"], entry["methods"] = path, [record["method"]]
    elif scope != "domain":
        raise ExclusionError("scope is path or domain")
    entry.update({"id": "ex-" + secrets.token_hex(6), "reason": reason, "author": author, "created": time.time(),
                  "expires": expires, "from_record": record["id"]})
    return entry


def diff(entry: dict[str, Any]) -> str:
    """How the domain's policy changes, as the lines a YAML exclusion would have."""
    lines = [f"# {managed_path(Path('<state_dir>')).name}: domain {entry['domain']}, waf.exclusions",
             f"+ - name: {exclusion_id(entry)}", f"+   rules: {entry['rules']}"]
    for key in ("target", "path", "methods"):
        if entry.get(key):
            lines.append(f"+   {key}: {entry[key]}")
    lines.append(f"+   reason: {entry['reason']!r}  # by {entry['author']}, from audit record {entry['from_record']}")
    if entry.get("expires"):
        lines.append(f"+   expires: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(entry['expires']))}")
    return "\n".join(lines)


def add(state_dir: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` atomically (a concurrent reader sees the old file or the new one)."""
    path = managed_path(state_dir)
    current = load(state_dir)
    current.append(entry)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"exclusions": current}, indent=1, sort_keys=True))
    os.replace(tmp, path)


def with_hits(state_dir: Path, counted: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
    """Every managed exclusion with its hits in ``counted`` (the store's per-name counts), then
    the named ones of the config file that have hits; the least used first (candidates to remove)."""
    now = time.time() if now is None else now
    hits = {str(c["key"]): int(c["count"]) for c in counted}
    out = []
    for entry in load(state_dir):
        name = exclusion_id(entry)
        out.append({"name": name, "hits": hits.pop(name, 0), "domain": entry["domain"], "rules": entry["rules"],
                    "target": entry.get("target"), "path": entry.get("path"), "reason": entry.get("reason"),
                    "author": entry.get("author"), "created": entry.get("created"), "expires": entry.get("expires"),
                    "expired": entry.get("expires") is not None and entry["expires"] <= now})
    out += [{"name": name, "hits": n, "source": "config"} for name, n in hits.items()]
    return sorted(out, key=lambda e: (e["hits"], e["name"]))
