"""Prometheus metrics. Workers write through prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor) so the admin listener can sum every worker.
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "edgeward_requests_total", "Requests handled, by domain, status and verdict", ("domain", "status", "verdict")
)
LATENCY = Histogram(
    "edgeward_request_duration_seconds",
    "Time from request start to the end of the response, by domain",
    ("domain",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RELOADS = Counter("edgeward_config_reloads_total", "Config reload attempts, by result", ("result",))


class RequestMetrics:
    """Caches label children so the hot path does one dict lookup, not a label resolution."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, int, str], object] = {}
        self._latency: dict[str, object] = {}

    def observe(self, domain: str, status: int, verdict: str, seconds: float) -> None:
        key = (domain, status, verdict)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = REQUESTS.labels(domain, str(status), verdict)
        counter.inc()  # type: ignore[attr-defined]
        hist = self._latency.get(domain)
        if hist is None:
            hist = self._latency[domain] = LATENCY.labels(domain)
        hist.observe(seconds)  # type: ignore[attr-defined]
