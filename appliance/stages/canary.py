"""Canary rule bundles: a candidate runs in detection-only beside the enforcing bundle on live
traffic, and every disagreement is counted per rule with sample request ids.

Each worker counts in memory and writes ``state_dir/run/canary/worker-<pid>.json`` twice a second
(with the metrics); ``edgeward bundle canary-report`` sums the files. The candidate's cost is the
time its evaluation adds, reported beside the enforcing bundle's.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from waf.compiler import CompiledRules
from waf.inspect import Inspection, Outcome

from appliance.pipeline.context import RequestContext

SAMPLES = 5
_SUMMARY_RULES = {949110, 959100, 980130, 980140}  # CRS's blocking-evaluation and correlation rules


class CanaryStats:
    """Per-process disagreement counts, keyed by (scope, candidate digest)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    def record(self, key: str, meta: dict[str, str], current: set[int], current_block: bool,
               candidate: set[int], candidate_block: bool, request_id: str, t_current: float, t_candidate: float) -> None:
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = {**meta, "requests": 0, "candidate_only_blocks": 0, "current_only_blocks": 0,
                                         "seconds_current": 0.0, "seconds_candidate": 0.0, "rules": {}}
        entry["requests"] += 1
        entry["seconds_current"] += t_current
        entry["seconds_candidate"] += t_candidate
        if candidate_block == current_block:
            return
        side, rules = ("candidate_blocks", candidate - current) if candidate_block else ("current_blocks", current - candidate)
        entry["candidate_only_blocks" if candidate_block else "current_only_blocks"] += 1
        for rid in sorted(rules - _SUMMARY_RULES) or [0]:  # 0: the scores differ with no rule of its own
            rule = entry["rules"].setdefault(str(rid), {"candidate_blocks": 0, "current_blocks": 0, "samples": []})
            rule[side] += 1
            if len(rule["samples"]) < SAMPLES:
                rule["samples"].append(request_id)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """A copy taken on the event loop, for ``write_snapshot`` in a thread."""
        return copy.deepcopy(self.entries)


class Canary:
    """The candidate's rules, compiled to block so the engine says exactly what it would stop, but
    only ever recorded: its decision never reaches the client."""

    def __init__(self, compiled: CompiledRules, stats: CanaryStats, scope: str, candidate: str, digest: str,
                 current: str) -> None:
        self.compiled = compiled
        self.stats = stats
        self.key = f"{scope}|{digest}"
        self.meta = {"scope": scope, "candidate": candidate, "candidate_digest": digest, "current": current}

    def evaluate(self, ctx: RequestContext, view: Any, body: bytes, current: Outcome,
                 current_block: bool, t_current: float) -> None:
        self.record(ctx, current, current_block, t_current, *self.inspect(
            ctx.request_id, view, body, ctx.spool.path if ctx.spool else None))

    def inspect(self, request_id: str, view: Any, body: bytes, path: Path | None = None) -> tuple[Outcome, bool, float]:
        """The candidate's verdict (outcome, would block, seconds); safe to run in a thread.
        ``path``: the body's spool file instead of ``body``."""
        started = time.perf_counter()
        inspection = Inspection(self.compiled, view, request_id)
        decision = inspection.request_headers() or inspection.request_body(body, path)
        outcome = inspection.finish()
        return outcome, decision is not None and decision.block, time.perf_counter() - started

    def record(self, ctx: RequestContext, current: Outcome, current_block: bool, t_current: float,
               outcome: Outcome, block: bool, elapsed: float) -> None:
        """Count one comparison; on the event loop, which owns the statistics."""
        self.stats.record(
            self.key, self.meta, set(current.rule_ids), current_block,
            set(outcome.rule_ids), block, ctx.request_id, t_current, elapsed,
        )


def report(directory: Path) -> list[dict[str, Any]]:
    """Sum every worker's file."""
    total: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("worker-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key, entry in data.items():
            into = total.setdefault(key, {**{k: entry[k] for k in ("scope", "candidate", "candidate_digest", "current")},
                                          "requests": 0, "candidate_only_blocks": 0, "current_only_blocks": 0,
                                          "seconds_current": 0.0, "seconds_candidate": 0.0, "rules": {}})
            for field in ("requests", "candidate_only_blocks", "current_only_blocks", "seconds_current", "seconds_candidate"):
                into[field] += entry[field]
            for rid, rule in entry["rules"].items():
                r = into["rules"].setdefault(rid, {"candidate_blocks": 0, "current_blocks": 0, "samples": []})
                r["candidate_blocks"] += rule["candidate_blocks"]
                r["current_blocks"] += rule["current_blocks"]
                r["samples"] = (r["samples"] + rule["samples"])[:SAMPLES]
    for entry in total.values():
        cur = entry["seconds_current"]
        entry["extra_cost_percent"] = round(100 * entry["seconds_candidate"] / cur, 1) if cur else None
    return list(total.values())
