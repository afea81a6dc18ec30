"""What every command shares: the -c option, loading the config, printing records."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from appliance.config.loader import load_config
from appliance.config.schema import Config
from appliance.errors import ConfigError


def config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=os.environ.get("EDGEWARD_CONFIG", "edgeward.yaml"),
        help="config file (default: $EDGEWARD_CONFIG or ./edgeward.yaml)",
    )


def load(args: argparse.Namespace) -> Config:
    """Commands that only touch state need a valid config (for state_dir and rules), not a runnable one."""
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from exc


def state_dir(args: argparse.Namespace) -> Path:
    return load(args).state_dir


def emit(args: argparse.Namespace, record: dict[str, object], text: str) -> None:
    print(json.dumps(record, sort_keys=True) if args.json else text)
