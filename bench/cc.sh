#!/bin/sh
# Installs what the benchmark needs (nginx as the origin, wrk, redis-server), then runs bench/cc.py.
set -eu
cd "$(dirname "$0")/.."
scripts/apt-ensure nginx-light wrk redis-server
exec .venv/bin/python bench/cc.py "$@"
