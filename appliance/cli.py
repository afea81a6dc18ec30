"""The ``edgeward`` command line."""
from __future__ import annotations

import argparse
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
    try:
        load_config(path)
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

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print("reload refused: the running config stays", file=sys.stderr)
        return 2
    request_reload(config)
    print("reload requested: workers switch within a second")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demoapp
    from .server import serve

    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    path = state / "demo.yaml"
    path.write_text(DEMO_CONFIG.format(listen=args.listen, admin=args.admin, upstream=args.upstream))
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
    p = sub.add_parser("demo", help="run the appliance in front of a built-in demo app")
    p.add_argument("--listen", default="127.0.0.1:8080")
    p.add_argument("--admin", default="127.0.0.1:8001")
    p.add_argument("--upstream", default="127.0.0.1:9001", help="address for the demo app")
    p.add_argument("--state-dir", default="var/demo")
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
