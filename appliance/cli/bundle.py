"""``edgeward bundle ...``: rule bundles as artifacts (import, sign, activate, canary, rollback)."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from appliance.cli.common import config_arg, emit, load, state_dir

def cmd_bundle_import(args: argparse.Namespace) -> int:
    from rules.errors import BundleError

    from appliance.bundles import import_bundle

    state = state_dir(args)
    try:
        result = import_bundle(state, args.source, args.name, args.version, sha256=args.sha256,
                               include=args.include, exclude=args.exclude, plugins=args.plugin, extras=args.extra)
    except BundleError as exc:
        print(f"import refused: {exc}", file=sys.stderr)
        return 1
    m = result.manifest
    for path, why in sorted(result.excluded.items()):
        print(f"note: {path} left out: {why}", file=sys.stderr)
    emit(args, {"ref": m.ref, "digest": m.digest, "new": result.new, "rule_count": m.rule_count,
                  "excluded": result.excluded},
           f"{m.ref} {m.digest}\n{m.rule_count} rules, engine {m.engine}{'' if result.new else ' (already in the store)'}")
    return 0


def cmd_bundle_list(args: argparse.Namespace) -> int:
    from appliance.bundles import activations_for, store_for

    state = state_dir(args)
    active = activations_for(state).active()
    for m in store_for(state).manifests():
        mark = "*" if active and active.digest == m.digest else " "
        emit(args, {"ref": m.ref, "digest": m.digest, "rule_count": m.rule_count, "created": m.created,
                      "active": mark == "*"},
               f"{mark} {m.ref:24} {m.digest[:12]}  {m.rule_count:5} rules  {m.created}")
    return 0


def cmd_bundle_show(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rules.errors import BundleError

    from appliance.bundles import store_for

    try:
        m = store_for(state_dir(args)).resolve(args.ref)
    except BundleError as exc:
        print(exc, file=sys.stderr)
        return 1
    record = asdict(m)
    if not args.json:
        record.pop("rule_ids")
        record["files"] = len(m.files)
    print(json.dumps(record, indent=None if args.json else 2, sort_keys=True))
    return 0


def cmd_bundle_activate(args: argparse.Namespace) -> int:
    from rules.errors import BundleError

    from appliance.bundles import activate_bundle, canary_scope, domain_scope

    config = load(args)
    try:
        scope = domain_scope(config, args.domain)
        m, entry = activate_bundle(config.state_dir, config.rules, args.ref,
                                   canary_scope(scope) if args.canary else scope, args.reason)
    except BundleError as exc:
        print(f"activation refused: {exc}", file=sys.stderr)
        return 1
    what = "runs as a detection-only canary" if args.canary else "is active"
    emit(args, {"ref": m.ref, "digest": m.digest, "scope": scope, "canary": args.canary, "at": entry.at},
           f"{m.ref} ({m.digest[:12]}) {what} for {args.domain or 'all domains'}; workers switch within a second")
    return 0


def cmd_bundle_canary_report(args: argparse.Namespace) -> int:
    from appliance.stages.canary import report

    entries = report(state_dir(args) / "run" / "canary")
    if args.json:
        print(json.dumps(entries, sort_keys=True))
        return 0
    if not entries:
        print("no canary has seen traffic yet")
    for e in entries:
        print(f"canary {e['candidate']} ({e['candidate_digest'][:12]}) beside {e['current']} for {e['scope']}: "
              f"{e['requests']} requests, candidate alone would block {e['candidate_only_blocks']}, "
              f"current alone blocks {e['current_only_blocks']}, extra cost {e['extra_cost_percent']}% of WAF time")
        for rid, r in sorted(e["rules"].items(), key=lambda kv: -(kv[1]["candidate_blocks"] + kv[1]["current_blocks"])):
            print(f"  rule {rid}: candidate blocks {r['candidate_blocks']}, current blocks {r['current_blocks']}; "
                  f"samples {', '.join(r['samples'])}")
    return 0


def cmd_bundle_promote(args: argparse.Namespace) -> int:
    from rules.errors import BundleError

    from appliance.bundles import domain_scope, promote_canary

    config = load(args)
    try:
        m = promote_canary(config.state_dir, config.rules, domain_scope(config, args.domain), args.reason)
    except BundleError as exc:
        print(f"promote refused: {exc}", file=sys.stderr)
        return 1
    print(f"{m.ref} ({m.digest[:12]}) now enforces for {args.domain or 'all domains'}; the canary has ended")
    return 0


def cmd_bundle_keygen(args: argparse.Namespace) -> int:
    from rules.signing import keygen

    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"{out} exists (use --force to replace it)", file=sys.stderr)
        return 1
    kid = keygen(out)
    print(f"private key {out} (mode 600), public key {out}.pub, key id {kid}")
    return 0


def cmd_bundle_sign(args: argparse.Namespace) -> int:
    from rules.errors import BundleError
    from rules.signing import sign

    from appliance.bundles import store_for

    store = store_for(state_dir(args))
    try:
        m = store.resolve(args.ref)
        store.verify(m)  # never sign a bundle whose files changed
        kid = sign(store.path(m), Path(args.key))
    except BundleError as exc:
        print(f"sign refused: {exc}", file=sys.stderr)
        return 1
    print(f"{m.ref} ({m.digest[:12]}) signed with key {kid}")
    return 0


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from rules.errors import BundleError

    from appliance.bundles import verify_bundle

    config = load(args)
    try:
        m, signature = verify_bundle(config.state_dir, config.rules, args.ref)
    except BundleError as exc:
        emit(args, {"ref": args.ref, "ok": False, "problem": str(exc)}, f"FAILED: {exc}")
        return 1
    signed = f"signed by key {signature.key_id}" if signature else "unsigned"
    emit(args, {"ref": m.ref, "digest": m.digest, "ok": True, "signed": bool(signature),
                  "key_id": signature.key_id if signature else None},
           f"OK: {m.ref} ({m.digest[:12]}): {len(m.files)} files match the manifest; {signed}")
    return 0


def cmd_bundle_diff(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rules.diff import diff
    from rules.errors import BundleError

    from appliance.bundles import store_for

    store = store_for(state_dir(args))
    try:
        a, b = store.resolve(args.a), store.resolve(args.b)
    except BundleError as exc:
        print(exc, file=sys.stderr)
        return 1
    d = diff(store.path(a), a, store.path(b), b)
    if args.json:
        print(json.dumps({"a": a.ref, "b": b.ref, **asdict(d)}, sort_keys=True))
        return 0
    print(f"--- {a.ref} ({a.digest[:12]})\n+++ {b.ref} ({b.digest[:12]})")
    for label, rules in (("added", d.added), ("removed", d.removed), ("changed", d.changed)):
        for rid, msg in rules.items():
            print(f"{label:8} {rid}  {msg}")
    for name, (old, new) in d.setup.items():
        print(f"setup    tx.{name}: {old} -> {new}")
    if d.empty:
        print("no rule or setup differences")
    return 0


def cmd_bundle_export(args: argparse.Namespace) -> int:
    from rules.errors import BundleError

    from appliance.bundles import export_bundle

    try:
        out, m = export_bundle(state_dir(args), args.ref, Path(args.out) if args.out else None)
    except BundleError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{out}: {m.ref} {m.digest}")
    return 0


def cmd_bundle_gc(args: argparse.Namespace) -> int:
    from appliance.bundles import collect_garbage, store_for

    config = load(args)
    removed = collect_garbage(config, dry_run=args.dry_run)
    for m in removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {m.ref} ({m.digest[:12]})")
    print(f"{len(removed)} bundle(s) {'to remove' if args.dry_run else 'removed'}, "
          f"{len(store_for(config.state_dir).manifests())} kept")
    return 0


def cmd_bundle_rollback(args: argparse.Namespace) -> int:
    from rules.errors import BundleError

    from appliance.bundles import activations_for, domain_scope

    config = load(args)
    try:
        scope = domain_scope(config, args.domain)
        entry = activations_for(config.state_dir).rollback(scope, args.steps, args.reason)
    except (BundleError, LookupError, ValueError) as exc:
        print(f"rollback refused: {exc}", file=sys.stderr)
        return 1
    emit(args, {"scope": scope, "ref": entry.ref, "digest": entry.digest, "at": entry.at},
           f"{args.domain or 'all domains'} now run {entry.ref}" + (f" ({entry.digest[:12]})" if entry.digest else ""))
    return 0


def cmd_bundle_history(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from appliance.bundles import activations_for, domain_scope

    config = load(args)
    for entry in activations_for(config.state_dir).history(domain_scope(config, args.domain)):
        emit(args, asdict(entry), f"{entry.at}  {entry.ref:20} {entry.digest[:12] or '(global)':12}  {entry.by:10} {entry.reason}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bundle = sub.add_parser("bundle", help="rule bundles: import, list, show, activate").add_subparsers(
        dest="bundle_command", required=True)

    def command(name: str, help: str, func: Callable[[argparse.Namespace], int], *args: str,
                json_output: bool = False, config: bool = True) -> argparse.ArgumentParser:
        """A bundle subcommand: -c FILE (and --json) where it applies, then its own arguments."""
        p = bundle.add_parser(name, help=help)
        if config:
            config_arg(p)
        for arg in args:
            p.add_argument(arg)
        if json_output:
            p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
        return p

    p = command("import", "import a rule set directory, archive or URL into the bundle store", cmd_bundle_import,
                json_output=True)
    p.add_argument("source", help="directory (Debian's /usr/share/modsecurity-crs, a CRS tree, .conf files), "
                   ".tar.gz/.zip archive, or https:// URL (with --sha256)")
    p.add_argument("--name")
    p.add_argument("--version", help="default: read from the CRS files")
    p.add_argument("--sha256", help="required for a URL: the archive's sha256")
    p.add_argument("--include", action="append", default=[], metavar="GLOB", help="keep only matching files (rules/REQUEST-9*.conf)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="leave matching files out")
    p.add_argument("--plugin", action="append", default=[], metavar="DIR_OR_ARCHIVE", help="a CRS 4 plugin")
    p.add_argument("--extra", action="append", default=[], metavar="FILE.conf", help="your own rules, loaded last")
    command("list", "list stored bundles (* marks the global one)", cmd_bundle_list, json_output=True)
    command("show", "a bundle's manifest", cmd_bundle_show, "ref", json_output=True)
    p = command("keygen", "write an Ed25519 key pair (PATH mode 600, PATH.pub)", cmd_bundle_keygen, config=False)
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    command("sign", "sign a bundle's manifest", cmd_bundle_sign, "ref").add_argument("--key", required=True)
    command("verify", "check every file against the manifest, and the signature", cmd_bundle_verify, "ref",
            json_output=True)
    command("diff", "rule ids added, removed, changed; setup variables changed", cmd_bundle_diff, "a", "b",
            json_output=True)
    command("export", "a tarball that imports elsewhere to the same digest", cmd_bundle_export, "ref").add_argument("--out")
    command("gc", "remove bundles no activation history or config pin uses", cmd_bundle_gc).add_argument(
        "--dry-run", action="store_true")
    p = command("rollback", "go back to an earlier activation", cmd_bundle_rollback, json_output=True)
    p.add_argument("--domain")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--reason", default="")
    command("history", "activations of a scope: who, when, why", cmd_bundle_history, json_output=True).add_argument("--domain")
    command("canary-report", "where the canary and the enforcing bundle disagree, per rule", cmd_bundle_canary_report,
            json_output=True)
    p = command("promote", "make the canary enforce", cmd_bundle_promote)
    p.add_argument("--domain")
    p.add_argument("--reason", default="")
    p = command("activate", "make a bundle the one that runs (or a canary beside it)", cmd_bundle_activate, "ref",
                json_output=True)
    p.add_argument("--canary", action="store_true", help="run it in detection-only beside the enforcing bundle")
    p.add_argument("--domain", help="only for this domain (default: all domains)")
    p.add_argument("--reason", default="")
