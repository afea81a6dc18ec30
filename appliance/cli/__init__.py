"""The ``edgeward`` command line: one module per command group, each with a ``register``."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from rules.errors import BundleError

from appliance.cli import audit, bundle, cc, conformance, consumer, serve
from appliance.errors import EdgewardError
from appliance.observe.auditstore import AuditStoreError


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("EDGEWARD_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="edgeward", description="Edgeward security gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (serve, bundle, conformance, audit, cc, consumer):
        group.register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (BundleError, EdgewardError, AuditStoreError) as exc:  # a clear message, never a traceback
        print(f"edgeward: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
