"""The canonical telemetry schema: metric names carry their units."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Canonical per-stage metrics, in the fixed order the simulator uses.
CANONICAL_METRICS: tuple[str, ...] = (
    "latency_p95_ms",
    "error_rate",
    "cpu_pct",
    "memory_pct",
    "throughput_rps",
    "queue_depth",
)

METRIC_DOCS: dict[str, str] = {
    "latency_p95_ms": "95th-percentile request latency, milliseconds",
    "error_rate": "fraction of requests that failed, 0..1",
    "cpu_pct": "CPU utilisation of the stage, percent of its allocation",
    "memory_pct": "memory utilisation of the stage, percent of its limit",
    "throughput_rps": "requests (or records) processed per second",
    "queue_depth": "requests in flight or waiting (Little's law: throughput x latency)",
}

#: Physically valid range of each metric; values outside are clipped by the simulator.
METRIC_BOUNDS: dict[str, tuple[float, float]] = {
    "latency_p95_ms": (0.0, 600_000.0),
    "error_rate": (0.0, 1.0),
    "cpu_pct": (0.0, 100.0),
    "memory_pct": (0.0, 100.0),
    "throughput_rps": (0.0, 1e9),
    "queue_depth": (0.0, 1e9),
}

TIMESTAMP = "timestamp"
STAGE = "stage"
FAULT_COLUMNS: tuple[str, ...] = ("start", "end", "entity", "fault_type", "source_label")


def unix_seconds(values: object) -> np.ndarray:
    """Float unix seconds of a datetime Series, whatever its stored resolution (ns, us, ms, s)."""
    series = pd.Series(values)
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        series = pd.to_datetime(series, utc=True)
    return series.dt.as_unit("ns").astype("int64").to_numpy() / 1e9
