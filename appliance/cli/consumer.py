"""``edgeward consumer``: make the stored forms of credentials for the config's ``consumers``."""
from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from appliance.cli.common import config_arg, load

if TYPE_CHECKING:
    from appliance.config.schema import Config

T = TypeVar("T")


def cmd_hash_key(args: argparse.Namespace) -> int:
    from authn.consumers import hash_key

    key = args.key or secrets.token_urlsafe(32)
    if not args.key:
        print(f"key:    {key}   (give it to the consumer; it is not stored anywhere)")
    print(f"sha256: {hash_key(key)}")
    print(f"config: - {{type: key, sha256: {hash_key(key)}}}")
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    from authn.consumers import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("edgeward: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("edgeward: a password needs at least 8 characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def _changed(args: argparse.Namespace, change: Callable[[Config], T]) -> T:
    from appliance.reloader import request_reload

    config = load(args)
    result = change(config)
    request_reload(config)
    return result


def cmd_add(args: argparse.Namespace) -> int:
    from appliance.consumers import add

    basic = None
    if args.basic:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if len(password) < 8:
            print("edgeward: a password needs at least 8 characters", file=sys.stderr)
            return 2
        basic = (args.basic, password)
    key = _changed(args, lambda c: add(c, args.name, args.group or [], not args.no_key, basic,
                                       time.time() + args.expires if args.expires else None))
    print(f"added {args.name}; workers reload within a second")
    if key:
        print(f"key: {key}   (shown once: give it to the consumer)")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from appliance.consumers import rotate

    key = _changed(args, lambda c: rotate(c, args.name, args.grace))
    print(f"new key for {args.name}: {key}   (shown once); its other keys expire in {args.grace:g} s")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from appliance.consumers import remove

    _changed(args, lambda c: remove(c, args.name))
    print(f"removed {args.name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from appliance.consumers import listing

    for consumer in listing(load(args)):
        if args.json:
            print(json.dumps(consumer, sort_keys=True))
            continue
        creds = ", ".join(c["id"] + (" (expired)" if c["expired"] else "") for c in consumer["credentials"]) or "-"
        print(f"{consumer['name']}  [{','.join(consumer['groups'])}]  {creds}  ({consumer['source']})")
    return 0


def _seconds(value: str) -> float:
    from appliance.config.types import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    consumer = sub.add_parser("consumer", help="stored forms of consumer credentials")
    cmds = consumer.add_subparsers(dest="consumer_command", required=True)
    p = cmds.add_parser("hash-key", help="the SHA-256 digest the config stores for an API key (a new key if none given)")
    p.add_argument("key", nargs="?")
    p.set_defaults(func=cmd_hash_key)
    p = cmds.add_parser("add", help="add a managed consumer with a new API key (shown once)")
    config_arg(p)
    p.add_argument("name")
    p.add_argument("--group", action="append", help="a group (repeat for several)")
    p.add_argument("--no-key", action="store_true", help="no API key")
    p.add_argument("--basic", metavar="USERNAME", help="also a basic-auth login (the password is asked for)")
    p.add_argument("--expires", type=_seconds, help="the key lapses after this long (90d)")
    p.set_defaults(func=cmd_add)
    p = cmds.add_parser("list", help="every consumer, its groups and credentials (identifiers, never secrets)")
    config_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = cmds.add_parser("rotate", help="a new API key; the consumer's other keys expire after --grace")
    config_arg(p)
    p.add_argument("name")
    p.add_argument("--grace", type=_seconds, default=7 * 86400.0, help="how long the old keys keep working (default 7d)")
    p.set_defaults(func=cmd_rotate)
    p = cmds.add_parser("remove", help="remove a managed consumer")
    config_arg(p)
    p.add_argument("name")
    p.set_defaults(func=cmd_remove)
    p = cmds.add_parser("hash-password", help="the scrypt hash the config stores for a basic-auth password "
                        "(read from the terminal, or the first line of standard input)")
    p.set_defaults(func=cmd_hash_password)
