"""``edgeward cc``: list, add and lift the bans every worker and node shares."""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cc.keys import ban_value

from appliance.cli.common import config_arg, load

T = TypeVar("T")


def with_limiter(args: argparse.Namespace, use: Callable[[Any], Awaitable[T]]) -> T:
    from cc.store import Limiter
    from redis.exceptions import RedisError

    from appliance.errors import EdgewardError
    from appliance.localredis import limiter_settings

    settings = limiter_settings(load(args))
    if settings is None:
        raise EdgewardError("no cc rules and no redis: in the config: there are no bans to manage")

    async def run() -> T:
        limiter = Limiter(**{**settings, "timeout": 2.0, "workers": 1})
        try:
            return await use(limiter)
        except (RedisError, OSError) as exc:
            raise EdgewardError(f"Redis: {exc} (is the appliance running? without redis: it owns a private one)") from exc
        finally:
            await limiter.close()

    return asyncio.run(run())


def cmd_bans(args: argparse.Namespace) -> int:
    bans = with_limiter(args, lambda limiter: limiter.bans())
    if args.json:
        for ban in bans:
            print(json.dumps(ban, sort_keys=True))
        return 0
    for ban in bans:
        left = "no expiry" if ban.get("expires_in") is None else f"{ban['expires_in']:.0f} s left"
        print(f"{ban['key']}  {left}  by {ban.get('by', '?')}: {ban.get('reason', '')}")
    if not bans:
        print("no bans")
    return 0


def cmd_ban(args: argparse.Namespace) -> int:
    from appliance.config.types import parse_duration

    key = ban_value(args.key)
    seconds = parse_duration(args.duration)
    with_limiter(args, lambda limiter: limiter.ban(key, seconds, args.reason, args.author or "cli"))
    print(f"banned {key} for {seconds:g} s (until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(time.time() + seconds))})")
    return 0


def cmd_unban(args: argparse.Namespace) -> int:
    key = ban_value(args.key)
    if with_limiter(args, lambda limiter: limiter.unban(key)):
        print(f"unbanned {key}")
        return 0
    print(f"{key} is not banned")
    return 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cc = sub.add_parser("cc", help="bans shared by every worker and node")
    cmds = cc.add_subparsers(dest="cc_command", required=True)
    p = cmds.add_parser("bans", help="the keys banned now, with the time left and why")
    config_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bans)
    p = cmds.add_parser("ban", help="ban a key (a client address, or a key as 'cc bans' lists it)")
    config_arg(p)
    p.add_argument("key")
    p.add_argument("--for", dest="duration", required=True, help="how long: 30m, 1h, 7d")
    p.add_argument("--reason", required=True)
    p.add_argument("--author")
    p.set_defaults(func=cmd_ban)
    p = cmds.add_parser("unban", help="lift a ban")
    config_arg(p)
    p.add_argument("key")
    p.set_defaults(func=cmd_unban)
