"""Running the appliance: serve, check, reload, demo."""
from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

from appliance.cli.common import config_arg
from appliance.config.loader import load_config
from appliance.errors import ConfigError

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
    access: {{deny_ips: [192.0.2.0/24]}}  # documentation addresses: an example to edit
    routes:
      - path: /login
        cc: [{{name: login, key: ip, limit: 5/minute}}]  # without redis:, a private redis-server counts
"""


def _check(path: str) -> int:
    from appliance.runtime import runtime_problems

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
    from appliance.server import serve

    return serve(args.config)


def cmd_reload(args: argparse.Namespace) -> int:
    from appliance.reloader import request_reload

    from appliance.runtime import runtime_problems

    try:
        config = load_config(args.config, check=runtime_problems)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print("reload refused: the running config stays", file=sys.stderr)
        return 2
    from appliance.instance import running

    instance = running(config.state_dir / "run")
    if instance is None:
        print(f"no appliance is serving state_dir {config.state_dir}", file=sys.stderr)
        return 1
    if instance.config != str(Path(args.config).resolve()):
        print(f"the appliance using state_dir {config.state_dir} (pid {instance.pid}) serves {instance.config},"
              f" not {args.config}: reload refused", file=sys.stderr)
        return 2
    request_reload(config)
    print("reload requested: workers switch within a second")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from appliance import demoapp
    from appliance.server import serve

    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    path = state / "demo.yaml"
    path.write_text(DEMO_CONFIG.format(listen=args.listen, admin=args.admin, upstream=args.upstream))
    from appliance.bundles import activations_for, import_bundle

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


def cmd_version(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    from waf.compiler import engine_version
    from waf.pcre import describe

    print(f"edgeward {version('edgeward')}")
    print(f"engine: {engine_version()}")
    print(f"regex: {describe()}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("version", help="Edgeward, WAF engine and PCRE2 (JIT) versions").set_defaults(func=cmd_version)
    p = sub.add_parser("serve", help="run the appliance")
    config_arg(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("check", help="validate a config file (exit 2 on problems)")
    config_arg(p)
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("reload", help="validate the config and make every worker switch to it")
    config_arg(p)
    p.set_defaults(func=cmd_reload)
    p = sub.add_parser("demo", help="run the appliance in front of a built-in demo app")
    p.add_argument("--listen", default="127.0.0.1:8080")
    p.add_argument("--admin", default="127.0.0.1:8001")
    p.add_argument("--upstream", default="127.0.0.1:9001", help="address for the demo app")
    p.add_argument("--state-dir", default="var/demo")
    p.add_argument("--crs", default="/usr/share/modsecurity-crs", help="default bundle source when none is active")
    p.set_defaults(func=cmd_demo)
