"""``edgeward consumer``: make the stored forms of credentials for the config's ``consumers``."""
from __future__ import annotations

import argparse
import getpass
import secrets
import sys


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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    consumer = sub.add_parser("consumer", help="stored forms of consumer credentials")
    cmds = consumer.add_subparsers(dest="consumer_command", required=True)
    p = cmds.add_parser("hash-key", help="the SHA-256 digest the config stores for an API key (a new key if none given)")
    p.add_argument("key", nargs="?")
    p.set_defaults(func=cmd_hash_key)
    p = cmds.add_parser("hash-password", help="the scrypt hash the config stores for a basic-auth password "
                        "(read from the terminal, or the first line of standard input)")
    p.set_defaults(func=cmd_hash_password)
