"""``edgeward audit``: search, show, follow, count and export the audit records of a state directory."""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

from appliance.cli.common import config_arg


def _when(value: str) -> float:
    """ISO 8601 (2026-11-26T10:00:00Z) or a span back from now (30m, 2h, 7d)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].isdigit():
        return time.time() - int(value[:-1]) * units[value[-1]]
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {value!r} (ISO 8601 such as 2026-11-26T10:00:00Z, or 30m, 2h, 7d)")
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _line(record: dict[str, Any]) -> str:
    waf = record.get("waf") or {}
    rules = ",".join(str(m["rule_id"]) for m in waf.get("matches", []))
    return (f"{_stamp(record['time'])} {record['id']} {record['status']} {record['reason']} {record['mode']} "
            f"{record['client']['ip']} {record['domain']} {record['method']} {record['uri']}"
            + (f" rules={rules}" if rules else ""))


def _open(args: argparse.Namespace) -> Any:
    """The configured store (SQLite in the state directory, or PostgreSQL), for reading."""
    from appliance.cli.common import load
    from appliance.observe.auditstore import open_store

    config = load(args)
    return open_store(config.audit.store, config.state_dir, readonly=True)


def cmd_search(args: argparse.Namespace) -> int:
    from appliance.observe.auditstore import Query

    query = Query(domain=args.domain, route=args.route, rule=args.rule, tag=args.tag, ip=args.ip,
                  country=args.country, stage=args.stage, status=args.status, consumer=args.consumer,
                  since=args.since, until=args.until, text=args.text, limit=args.limit)
    for record in _open(args).search(query):
        print(json.dumps(record, sort_keys=True) if args.json else _line(record))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    record = _open(args).get(args.id)
    if record is None:
        print(f"no audit record {args.id}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(record, sort_keys=True))
        return 0
    print(_line(record))
    print(f"  node {record['node']}, route {record['route']}, client port {record['client']['port']}, "
          f"{record['protocol']}, consumer {record.get('consumer') or '-'}")
    for name, value in record["headers"]:
        print(f"  {name}: {value}")
    if record.get("body"):
        print(f"  body ({record['body_bytes']} bytes; excerpt): {record['body'][:400]}")
    waf = record.get("waf")
    if waf:
        print(f"  waf: bundle {waf['bundle']} mode {waf['mode']} paranoia {waf['paranoia']} "
              f"inbound score {waf['anomaly_score']}")
        for m in waf["matches"]:
            print(f"    {m['rule_id']} [severity {m['severity']}, phase {m['phase']}] {m['message']}")
            if m["data"]:
                print(f"      data: {m['data']}")
            if m["tags"]:
                print(f"      tags: {', '.join(m['tags'])}")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    store = _open(args)
    since, seen = time.time() - args.back, set[str]()
    try:
        while True:
            for record in store.after(since, seen):
                seen.add(record["id"])
                since = max(since, record["time"] - 5)  # records from other workers can land late
                print(json.dumps(record, sort_keys=True) if args.json else _line(record), flush=True)
            if args.once:
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from appliance.cli.common import load
    from appliance.exclusions import with_hits

    result = _open(args).stats(args.since, args.until, args.top)
    result["exclusions"] = with_hits(load(args).state_dir, result["exclusions"])
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"{result['total']} records")
    for title, key in (("top rules", "rules"), ("top client IPs", "ips"), ("top paths", "paths"),
                       ("per stage", "stages"), ("per domain", "domains")):
        print(f"{title}:")
        for entry in result[key]:
            print(f"  {entry['count']:>8}  {entry['key']}")
    print("exclusions (hits: requests they applied to):")
    for entry in result["exclusions"]:
        detail = (f" {entry['domain']} rules {entry['rules']} {entry.get('target') or ''} {entry.get('path') or ''}"
                  f" - {entry['reason']}" + (" (expired)" if entry["expired"] else "")) if "domain" in entry else " (config file)"
        print(f"  {entry['hits']:>8}  {entry['name']}{detail}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from appliance.observe.ocsf import http_activity

    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for record in _open(args).iterate(args.since):
            event = http_activity(record) if args.format == "ocsf" else record
            out.write(json.dumps(event, sort_keys=True) + "\n")
    finally:
        if args.output:
            out.close()
    return 0


def _span(value: str) -> float:
    units = {"h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].isdigit():
        return int(value[:-1]) * units[value[-1]]
    raise argparse.ArgumentTypeError(f"not a duration: {value!r} (such as 12h or 30d)")


def cmd_exclude(args: argparse.Namespace) -> int:
    import getpass

    from appliance.cli.common import load
    from appliance.exclusions import ExclusionError, add, diff, propose
    from appliance.reloader import request_reload

    config = load(args)
    record = _open(args).get(args.id)
    if record is None:
        print(f"no audit record {args.id}", file=sys.stderr)
        return 1
    try:
        entry = propose(record, args.reason, args.author or getpass.getuser(), args.rule, args.target, args.scope,
                        time.time() + args.expires if args.expires else None)
    except ExclusionError as exc:
        print(f"edgeward: {exc}", file=sys.stderr)
        return 2
    print(diff(entry))
    if not args.apply:
        print("(dry run: --apply adds it and reloads)")
        return 0
    add(config.state_dir, entry)
    request_reload(config)
    print("added; workers reload within a second")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="search and review the audit records of blocked requests")
    cmds = audit.add_subparsers(dest="audit_command", required=True)

    p = cmds.add_parser("search", help="records, newest first; every filter given must hold")
    config_arg(p)
    p.add_argument("--domain")
    p.add_argument("--route", help="the route's path as configured, such as /api")
    p.add_argument("--rule", type=int, help="a WAF rule id that matched")
    p.add_argument("--tag", help="a tag of a matched rule, such as attack-sqli")
    p.add_argument("--ip", help="client address or CIDR")
    p.add_argument("--country", help="ISO 3166 country code of the client")
    p.add_argument("--stage", help="the stage that blocked (waf, auth, cc, access)")
    p.add_argument("--status", type=int)
    p.add_argument("--consumer", help="the authenticated consumer")
    p.add_argument("--since", type=_when, help="ISO 8601 time or a span back from now (30m, 2h, 7d)")
    p.add_argument("--until", type=_when)
    p.add_argument("--text", help="a substring of the URI")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_search)

    p = cmds.add_parser("show", help="one record in full")
    config_arg(p)
    p.add_argument("id", help="the request id (X-Request-Id)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = cmds.add_parser("tail", help="follow new records")
    config_arg(p)
    p.add_argument("--back", type=float, default=0.0, help="also print the records of the last N seconds")
    p.add_argument("--once", action="store_true", help="print what is there and stop")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tail)

    p = cmds.add_parser("stats", help="top rules, client IPs and paths, per stage and per domain")
    config_arg(p)
    p.add_argument("--since", type=_when)
    p.add_argument("--until", type=_when)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = cmds.add_parser("exclude", help="propose (and with --apply add) the narrowest WAF exclusion that "
                        "would have let a recorded request through")
    config_arg(p)
    p.add_argument("id", help="the request id of the record")
    p.add_argument("--rule", type=int, help="the rule to exclude (default: the record's most severe match)")
    p.add_argument("--target", help="only this variable, such as ARGS:q (default: the one the rule matched)")
    p.add_argument("--scope", choices=["path", "domain"], default="path",
                   help="path: this path and method only (default); domain: the whole domain")
    p.add_argument("--expires", type=_span, help="the exclusion lapses after this long (12h, 30d)")
    p.add_argument("--reason", required=True)
    p.add_argument("--author", help="who (default: the user running the command)")
    p.add_argument("--apply", action="store_true", help="add it to the domain's policy and reload")
    p.set_defaults(func=cmd_exclude)

    p = cmds.add_parser("export", help="every record as JSON lines, as they are or as OCSF events")
    config_arg(p)
    p.add_argument("--format", choices=["jsonl", "ocsf"], default="jsonl",
                   help="jsonl: the records; ocsf: OCSF 1.1 HTTP Activity events, one per line")
    p.add_argument("--since", type=_when)
    p.add_argument("--output", "-o", help="a file (default: standard output)")
    p.set_defaults(func=cmd_export)
