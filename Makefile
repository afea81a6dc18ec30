# The whole set-up on a fresh Debian machine: `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# libmodsecurity3 is the WAF engine; its -dev headers, libpcre2-dev and g++ build the binding (waf/engine_build.py)
# libpq5 is what psycopg talks to PostgreSQL through (audit.store: postgresql://...); redis-server
# is the node's private CC store when no redis: is configured (and the tests' Redis)
APT_PACKAGES := ca-certificates openssl modsecurity-crs libmodsecurity3 libmodsecurity-dev libpcre2-8-0 libpcre2-dev g++ libxml2 libpq5 redis-server
# the tests start their own PostgreSQL server (the shared audit store), drive Debian's Chromium
# through Playwright (the JavaScript challenge, OIDC login) and run a real OpenID provider on
# Node.js (tests/oidc: oidc-provider, pinned by package-lock.json)
TEST_PACKAGES := postgresql chromium nodejs
BENCH_PACKAGES := nginx-light wrk

.PHONY: run test install system-deps bench clean

install: $(STAMP)

system-deps:
	@scripts/apt-ensure $(APT_PACKAGES)

$(STAMP): pyproject.toml setup.py waf/engine_build.py waf/engine_shim.cpp waf/engine_shim.h
	@$(MAKE) --no-print-directory system-deps
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: install
	$(VENV)/bin/edgeward demo

test: install
	@scripts/apt-ensure $(TEST_PACKAGES)
	@command -v npm >/dev/null || scripts/apt-ensure npm
	@test -d tests/oidc/node_modules/oidc-provider || (cd tests/oidc && npm ci --no-audit --no-fund)
	$(VENV)/bin/mypy appliance waf rules cc authn
	$(VENV)/bin/pytest -q

bench: install
	@scripts/apt-ensure $(BENCH_PACKAGES)
	bench/proxy.sh

clean:
	rm -rf $(VENV) var
