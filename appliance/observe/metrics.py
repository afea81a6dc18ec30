"""Request metrics: counted in plain dicts on the hot path, published by the admin listener.

prometheus-client's multiprocess mode writes an mmap on every ``inc``/``observe``; measured here it
was about a quarter of the appliance's own per-request Python time. So each worker counts in
memory and writes a snapshot file (``worker-<pid>.json``) to the metrics directory every half
second; the admin listener's collector sums the files. A worker that dies keeps its last file, so
counters never go backwards when granian replaces it.
"""
from __future__ import annotations

import json
import os
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def write_snapshot(directory: Path, data: object) -> None:
    """Replace this worker's ``worker-<pid>.json`` in ``directory`` atomically (readers sum them)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"worker-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class WorkerMetrics:
    """One per worker process; ``observe`` is the only call on the request path."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int, str], int] = {}
        self.latency: dict[str, list[Any]] = {}  # domain -> [bucket counts..., +Inf count, sum]
        self.reloads: dict[str, int] = {}
        self.cc_degraded = 0
        self.cc_redis_errors = 0

    def cc(self, degraded: bool, errors: int) -> None:
        """The CC limiter's health, copied in before each snapshot."""
        self.cc_degraded, self.cc_redis_errors = int(degraded), errors

    def observe(self, domain: str, status: int, verdict: str, seconds: float) -> None:
        key = (domain, status, verdict)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(domain)
        if hist is None:
            hist = self.latency[domain] = [0] * (len(BUCKETS) + 1) + [0.0]
        hist[bisect_left(BUCKETS, seconds)] += 1
        hist[-1] += seconds

    def reload(self, result: str) -> None:
        self.reloads[result] = self.reloads.get(result, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """A copy of the totals, taken on the event loop (the loop mutates the dicts; a thread
        iterating them would race it), to be written by ``write_snapshot`` in a thread."""
        return {
            "requests": [[d, s, v, n] for (d, s, v), n in self.requests.items()],
            "latency": {domain: list(hist) for domain, hist in self.latency.items()},
            "reloads": dict(self.reloads),
            "cc": [self.cc_degraded, self.cc_redis_errors],
        }


class SnapshotCollector(Collector):
    """Sums every worker's snapshot file into Prometheus metric families."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Any]:
        requests: dict[tuple[str, str, str], int] = {}
        latency: dict[str, list[float]] = {}
        reloads: dict[str, int] = {}
        degraded = errors = 0
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a file being replaced; the next scrape reads it
            for domain, status, verdict, count in data["requests"]:
                key = (domain, str(status), verdict)
                requests[key] = requests.get(key, 0) + count
            for domain, hist in data["latency"].items():
                total = latency.setdefault(domain, [0.0] * len(hist))
                for i, value in enumerate(hist):
                    total[i] += value
            for result, count in data["reloads"].items():
                reloads[result] = reloads.get(result, 0) + count
            cc_degraded, cc_errors = data.get("cc", [0, 0])
            degraded += cc_degraded
            errors += cc_errors
        family = CounterMetricFamily(
            "edgeward_requests", "Requests handled, by domain, status and verdict", labels=("domain", "status", "verdict"))
        for labels, count in sorted(requests.items()):
            family.add_metric(labels, count)
        yield family
        hist_family = HistogramMetricFamily(
            "edgeward_request_duration_seconds", "Time from request start to the end of the response, by domain",
            labels=("domain",))
        for domain, hist in sorted(latency.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip((*BUCKETS, float("inf")), hist[:-1]):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            hist_family.add_metric([domain], buckets, hist[-1])
        yield hist_family
        reload_family = CounterMetricFamily("edgeward_config_reloads", "Config reload attempts, by result", labels=("result",))
        for result, count in sorted(reloads.items()):
            reload_family.add_metric([result], count)
        yield reload_family
        yield GaugeMetricFamily("edgeward_cc_degraded_workers",
                                "Workers whose CC decisions fall back to on_redis_error because Redis failed", value=degraded)
        yield CounterMetricFamily("edgeward_cc_redis_errors", "CC decisions that Redis failed or timed out", value=errors)
