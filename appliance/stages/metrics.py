"""Request metrics as a ``done`` consumer, counted into the worker's ``WorkerMetrics``."""
from __future__ import annotations

import time
from typing import ClassVar

from appliance.observe.metrics import WorkerMetrics
from appliance.pipeline.context import RequestContext
from appliance.pipeline.stage import Stage
from appliance.pipeline.verdict import Outcome


class MetricsStage(Stage):
    name: ClassVar[str] = "metrics"

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def done(self, ctx: RequestContext, outcome: Outcome) -> None:
        self.metrics.observe(ctx.domain, outcome.status, outcome.verdict, time.perf_counter() - ctx.started)
