"""Metrics snapshots are taken on the loop and never share state with it."""
from __future__ import annotations

from appliance.observe.metrics import WorkerMetrics


def test_snapshot_is_a_copy_the_loop_can_keep_mutating() -> None:
    metrics = WorkerMetrics()
    metrics.observe("d", 200, "allow", 0.01)
    snapshot = metrics.snapshot()
    for i in range(100):  # the loop goes on counting while a thread writes the snapshot
        metrics.observe(f"d{i}", 200, "allow", 0.01)
    assert snapshot["requests"] == [["d", 200, "allow", 1]]
    assert list(snapshot["latency"]) == ["d"] and sum(snapshot["latency"]["d"][:-1]) == 1
