"""The ``edgeward`` command line."""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
from pathlib import Path

from .configfile import load_config
from .errors import ConfigError

DEMO_CONFIG = """\
# Written by `edgeward demo`: the appliance in front of the built-in demo app.
listen: {listen}
workers: 2
state_dir: .
admin:
  listen: {admin}
  token_env: EDGEWARD_ADMIN_TOKEN
domains:
  - hosts: [app.example.test, localhost, 127.0.0.1]
    upstream: http://{upstream}
    waf: {{mode: block}}
"""


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=os.environ.get("EDGEWARD_CONFIG", "edgeward.yaml"),
        help="config file (default: $EDGEWARD_CONFIG or ./edgeward.yaml)",
    )


def _check(path: str) -> int:
    from .runtime import runtime_problems

    try:
        load_config(path, check=runtime_problems)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    code = _check(args.config)
    if code == 0:
        print(f"{args.config}: ok")
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    if _check(args.config):
        return 2
    from .server import serve

    return serve(args.config)


def cmd_reload(args: argparse.Namespace) -> int:
    from .reloader import request_reload

    from .runtime import runtime_problems

    try:
        config = load_config(args.config, check=runtime_problems)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print("reload refused: the running config stays", file=sys.stderr)
        return 2
    request_reload(config)
    print("reload requested: workers switch within a second")
    return 0


def _state_dir(args: argparse.Namespace) -> Path:
    """Commands that only touch state need the config's state_dir, not a runnable config."""
    try:
        return load_config(args.config).state_dir
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from exc


def _print(args: argparse.Namespace, record: dict[str, object], text: str) -> None:
    print(json.dumps(record, sort_keys=True) if args.json else text)


def cmd_bundle_import(args: argparse.Namespace) -> int:
    from rules.errors import BundleError

    from .bundles import import_bundle

    state = _state_dir(args)
    try:
        result = import_bundle(state, Path(args.source), args.name, args.version)
    except BundleError as exc:
        print(f"import refused: {exc}", file=sys.stderr)
        return 1
    m = result.manifest
    for path, why in sorted(result.excluded.items()):
        print(f"note: {path} left out: {why}", file=sys.stderr)
    _print(args, {"ref": m.ref, "digest": m.digest, "new": result.new, "rule_count": m.rule_count,
                  "excluded": result.excluded},
           f"{m.ref} {m.digest}\n{m.rule_count} rules, engine {m.engine}{'' if result.new else ' (already in the store)'}")
    return 0


def cmd_bundle_list(args: argparse.Namespace) -> int:
    from .bundles import activations_for, store_for

    state = _state_dir(args)
    active = activations_for(state).active()
    for m in store_for(state).manifests():
        mark = "*" if active and active.digest == m.digest else " "
        _print(args, {"ref": m.ref, "digest": m.digest, "rule_count": m.rule_count, "created": m.created,
                      "active": mark == "*"},
               f"{mark} {m.ref:24} {m.digest[:12]}  {m.rule_count:5} rules  {m.created}")
    return 0


def cmd_bundle_show(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rules.errors import BundleError

    from .bundles import store_for

    try:
        m = store_for(_state_dir(args)).resolve(args.ref)
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
    from rules.activation import GLOBAL
    from rules.errors import BundleError

    from .bundles import activations_for, store_for

    state = _state_dir(args)
    store = store_for(state)
    try:
        m = store.resolve(args.ref)
        store.verify(m)
    except BundleError as exc:
        print(f"activation refused: {exc}", file=sys.stderr)
        return 1
    entry = activations_for(state).activate(m.digest, m.ref, args.domain or GLOBAL, args.reason)
    _print(args, {"ref": m.ref, "digest": m.digest, "scope": args.domain or GLOBAL, "at": entry.at},
           f"{m.ref} ({m.digest[:12]}) active for {args.domain or 'all domains'}; workers switch within a second")
    return 0


def cmd_conformance(args: argparse.Namespace) -> int:
    """Run CRS's regression tests through the engine; the last line is `N passed, N failed, N skipped`."""
    from rules.activation import GLOBAL
    from rules.errors import BundleError
    from waf.conformance import load_overrides, run_suite

    from .bundles import activations_for, store_for

    directory = Path(args.directory)
    if not directory.is_dir():
        print(f"{directory}: not a directory", file=sys.stderr)
        return 2
    state = _state_dir(args)
    store = store_for(state)
    try:
        if args.bundle:
            manifest = store.resolve(args.bundle)
        else:
            active = activations_for(state).active(GLOBAL)
            if active is None:
                raise BundleError("no bundle given and none active (use --bundle REF)")
            manifest = store.resolve(active.digest)
        store.verify(manifest)
    except BundleError as exc:
        print(exc, file=sys.stderr)
        return 2
    overrides = load_overrides(Path(args.overrides)) if args.overrides else None
    http = None
    if args.http:
        host, _, port = args.http.rpartition(":")
        http = (host or "127.0.0.1", int(port))
    plain, applied = run_suite(directory, store.path(manifest), manifest.load_order, overrides, http=http)
    shown = applied or plain
    for result in shown.results:
        if result.status == "failed" or (args.verbose and result.status == "skipped"):
            print(f"{result.status.upper()} {result.case.test_id}: {result.reason}")
    print(f"bundle {manifest.ref} ({manifest.digest[:12]}), engine DetectionOnly, paranoia 4")
    if applied is not None:
        print(f"without overrides: {plain.line()}")
        print(f"with overrides ({args.overrides}): {applied.line()}")
    print(shown.line())
    return 1 if shown.count("failed") and args.strict else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demoapp
    from .server import serve

    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    path = state / "demo.yaml"
    path.write_text(DEMO_CONFIG.format(listen=args.listen, admin=args.admin, upstream=args.upstream))
    from .bundles import activations_for, import_bundle

    if activations_for(state).active() is None:
        source = Path(args.crs)
        if not source.is_dir():
            print(f"no rule bundle is active and {source} is missing: install Debian's modsecurity-crs "
                  "(make run does) or pass --crs DIR", file=sys.stderr)
            return 2
        result = import_bundle(state, source)
        activations_for(state).activate(result.manifest.digest, result.manifest.ref, reason="edgeward demo: default bundle")
        print(f"imported and activated {result.manifest.ref} ({result.manifest.digest[:12]}) from {source}")
    host, _, port = args.upstream.rpartition(":")
    upstream = multiprocessing.get_context("spawn").Process(target=demoapp.run, args=(host, int(port)), daemon=True)
    upstream.start()
    print(f"demo app on http://{args.upstream}; edgeward on http://{args.listen} (config {path})", flush=True)
    try:
        return serve(str(path))
    finally:
        upstream.terminate()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("EDGEWARD_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="edgeward", description="Edgeward security gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the appliance")
    _config_arg(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("check", help="validate a config file (exit 2 on problems)")
    _config_arg(p)
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("reload", help="validate the config and make every worker switch to it")
    _config_arg(p)
    p.set_defaults(func=cmd_reload)
    bundle = sub.add_parser("bundle", help="rule bundles: import, list, show, activate").add_subparsers(
        dest="bundle_command", required=True)
    p = bundle.add_parser("import", help="import a rule set directory into the bundle store")
    _config_arg(p)
    p.add_argument("source", help="directory (Debian's /usr/share/modsecurity-crs, a CRS tree, or .conf files)")
    p.add_argument("--name")
    p.add_argument("--version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bundle_import)
    p = bundle.add_parser("list", help="list stored bundles (* marks the global one)")
    _config_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bundle_list)
    p = bundle.add_parser("show", help="a bundle's manifest")
    _config_arg(p)
    p.add_argument("ref")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bundle_show)
    p = bundle.add_parser("activate", help="make a bundle the one that runs")
    _config_arg(p)
    p.add_argument("ref")
    p.add_argument("--domain", help="only for this domain (default: all domains)")
    p.add_argument("--reason", default="")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bundle_activate)

    p = sub.add_parser("conformance", help="run CRS's regression tests (ftw / go-ftw YAML) through the engine")
    _config_arg(p)
    p.add_argument("directory")
    p.add_argument("--bundle", help="bundle reference (default: the globally active one)")
    p.add_argument("--overrides", help="YAML file of known engine differences, each with a reason")
    p.add_argument("--http", metavar="HOST:PORT", help="also send web-server-only tests to a running appliance")
    p.add_argument("--strict", action="store_true", help="exit 1 when a test fails")
    p.add_argument("-v", "--verbose", action="store_true", help="list skipped tests with their reasons")
    p.set_defaults(func=cmd_conformance)

    p = sub.add_parser("demo", help="run the appliance in front of a built-in demo app")
    p.add_argument("--listen", default="127.0.0.1:8080")
    p.add_argument("--admin", default="127.0.0.1:8001")
    p.add_argument("--upstream", default="127.0.0.1:9001", help="address for the demo app")
    p.add_argument("--state-dir", default="var/demo")
    p.add_argument("--crs", default="/usr/share/modsecurity-crs", help="default bundle source when none is active")
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
