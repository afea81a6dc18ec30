"""``edgeward conformance``: CRS regression tests through the engine (and a running appliance)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.cli.common import config_arg, state_dir

def cmd_conformance(args: argparse.Namespace) -> int:
    """Run CRS's regression tests through the engine; the last line is `N passed, N failed, N skipped`."""
    from rules.activation import GLOBAL
    from rules.errors import BundleError
    from waf.conformance import load_overrides, run_suite
    from waf.diagnostics import route_xml_errors

    from appliance.bundles import activations_for, store_for

    route_xml_errors()  # the engine runs on this thread; CRS's XML tests must not spray stderr
    directory = Path(args.directory)
    if not directory.is_dir():
        print(f"{directory}: not a directory", file=sys.stderr)
        return 2
    state = state_dir(args)
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("conformance", help="run CRS's regression tests (ftw / go-ftw YAML) through the engine")
    config_arg(p)
    p.add_argument("directory")
    p.add_argument("--bundle", help="bundle reference (default: the globally active one)")
    p.add_argument("--overrides", help="YAML file of known engine differences, each with a reason")
    p.add_argument("--http", metavar="HOST:PORT", help="also send web-server-only tests to a running appliance")
    p.add_argument("--strict", action="store_true", help="exit 1 when a test fails")
    p.add_argument("-v", "--verbose", action="store_true", help="list skipped tests with their reasons")
    p.set_defaults(func=cmd_conformance)
