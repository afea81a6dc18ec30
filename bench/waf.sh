#!/bin/sh
# Installs what the WAF benchmark needs (nginx, its ModSecurity module, wrk, CRS), then runs
# bench/waf.py. Arguments pass through.
set -eu
cd "$(dirname "$0")/.."
scripts/apt-ensure nginx-light libnginx-mod-http-modsecurity wrk modsecurity-crs
exec .venv/bin/python bench/waf.py "$@"
