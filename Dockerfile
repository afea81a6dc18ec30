# Edgeward appliance image. Multi-stage: build a wheel with its dependencies, then install them
# into a slim runtime that runs as an unprivileged user.
FROM python:3.11-slim-bookworm AS build
# the engine binding is compiled against Debian's libmodsecurity (waf/engine_build.py)
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ libmodsecurity-dev libpcre2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY appliance ./appliance
COPY waf ./waf
COPY rules ./rules
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# Debian's OWASP CRS 3.3.4: the default rule bundle (import it once: see deploy/kubernetes.yaml)
RUN apt-get update \
 && apt-get install -y --no-install-recommends modsecurity-crs libmodsecurity3 libpcre2-8-0 \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /var/lib/edgeward --create-home edgeward \
 && mkdir -p /etc/edgeward \
 && chown edgeward /etc/edgeward
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels edgeward && rm -rf /wheels
USER edgeward
WORKDIR /var/lib/edgeward
ENV EDGEWARD_CONFIG=/etc/edgeward/edgeward.yaml
# public HTTP, public TLS, admin (health, readiness, metrics, API)
EXPOSE 8080 8443 8001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8001/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["edgeward"]
CMD ["serve"]
