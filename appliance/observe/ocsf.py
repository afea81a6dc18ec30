"""Audit records as OCSF 1.1 HTTP Activity events (class 4002), for SIEMs that speak OCSF.

The request maps to ``http_request`` / ``http_response`` / ``src_endpoint``, the verdict to
``action`` and ``disposition``, the rule that decided to ``firewall_rule``; what OCSF has no field
for (every WAF match, the anomaly score, the bundle) goes under ``unmapped.edgeward``.
"""
from __future__ import annotations

from typing import Any

OCSF_VERSION = "1.1.0"
HTTP_ACTIVITY = 4002
_ACTIVITIES = {"CONNECT": 1, "DELETE": 2, "GET": 3, "HEAD": 4, "OPTIONS": 5, "POST": 6, "PUT": 7, "TRACE": 8}
_SCORE_RULES = {949110, 959100, 980130, 980140, 980170}


def _rule(waf: dict[str, Any] | None) -> dict[str, Any] | None:
    """The most severe match that is not a score rule (severity 0 is CRS's most severe)."""
    matches = [m for m in (waf or {}).get("matches", []) if m["rule_id"] not in _SCORE_RULES]
    if not matches:
        return None
    top = min(matches, key=lambda m: (m["severity"] if m["severity"] else 9, m["rule_id"]))
    return {"uid": str(top["rule_id"]), "name": top["message"], "type": "WAF", "category": ", ".join(top["tags"][:4])}


def http_activity(record: dict[str, Any]) -> dict[str, Any]:
    method = record["method"].upper()
    activity = _ACTIVITIES.get(method, 99)
    path, _, query = record["uri"].partition("?")
    blocked = record["mode"] == "block"
    headers = record.get("headers") or []
    agent = next((value for name, value in headers if name.lower() == "user-agent"), None)
    event: dict[str, Any] = {
        "class_uid": HTTP_ACTIVITY, "class_name": "HTTP Activity", "category_uid": 4, "category_name": "Network Activity",
        "activity_id": activity, "activity_name": method.title() if activity != 99 else "Other",
        "type_uid": HTTP_ACTIVITY * 100 + activity,
        "time": int(record["time"] * 1000),
        "severity_id": 4 if blocked else 3, "severity": "High" if blocked else "Medium",
        "action_id": 2 if blocked else 1, "action": "Denied" if blocked else "Allowed",
        "disposition_id": 2 if blocked else 1, "disposition": "Blocked" if blocked else "Allowed",
        "status_id": 2 if blocked else 1, "status": "Failure" if blocked else "Success",
        "message": f"{record['reason']} ({record['stage']})",
        "metadata": {"version": OCSF_VERSION, "uid": record["id"], "log_name": "audit",
                     "product": {"name": "Edgeward", "vendor_name": "Edgeward"}},
        "http_request": {
            "uid": record["id"], "http_method": method, "version": record.get("protocol"),
            "url": {"hostname": record["domain"], "path": path, "query_string": query, "url_string": record["uri"]},
            "user_agent": agent, "http_headers": [{"name": name, "value": value} for name, value in headers],
        },
        "http_response": {"code": record["status"]},
        "src_endpoint": {"ip": record["client"]["ip"], "port": record["client"]["port"]},
        "dst_endpoint": {"hostname": record["domain"], "svc_name": record["route"]},
        "unmapped": {"edgeward": {"stage": record["stage"], "reason": record["reason"], "mode": record["mode"],
                                  "node": record.get("node"), "consumer": record.get("consumer"),
                                  "body_bytes": record.get("body_bytes"), "waf": record.get("waf")}},
    }
    rule = _rule(record.get("waf"))
    if rule is not None:
        event["firewall_rule"] = rule
    return event
