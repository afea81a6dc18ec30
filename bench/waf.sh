#!/bin/sh
# Installs what the WAF benchmark needs (nginx, its ModSecurity module, wrk, CRS), then runs
# bench/waf.py (with --bodies: bench/bodies.py). Other arguments pass through.
set -eu
cd "$(dirname "$0")/.."
scripts/apt-ensure nginx-light libnginx-mod-http-modsecurity wrk modsecurity-crs
if [ "${1:-}" = "--bodies" ]; then shift; exec .venv/bin/python bench/bodies.py "$@"; fi
exec .venv/bin/python bench/waf.py "$@"
