#!/bin/sh
# Installs what the benchmark needs (nginx, wrk), then runs bench/proxy.py. Arguments pass through.
set -eu
cd "$(dirname "$0")/.."
scripts/apt-ensure nginx-light wrk
exec .venv/bin/python bench/proxy.py "$@"
