"""A seeded generator of realistic synthetic pipeline telemetry.

Used for the embedded default and for tests; every dataset it writes says ``"synthetic": true``
in its metadata. Realism comes from three things real telemetry has: a daily load cycle, noise
with memory (AR(1), not white), and metrics that move together (CPU, latency and queue depth
follow load; downstream stages follow upstream throughput with a lag).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from healgym import __version__
from healgym.telemetry.dataset import TelemetryDataset
from healgym.telemetry.schema import CANONICAL_METRICS, STAGE, TIMESTAMP

DEFAULT_STAGES: tuple[str, ...] = ("ingest", "features", "train", "serve", "deliver")

# Healthy operating point of each default stage at mean load:
# (throughput_rps, latency_p95_ms, cpu_pct, memory_pct, error_rate)
_STAGE_PROFILE: dict[str, tuple[float, float, float, float, float]] = {
    "ingest": (220.0, 35.0, 30.0, 40.0, 0.002),
    "features": (210.0, 60.0, 40.0, 55.0, 0.003),
    "train": (25.0, 450.0, 55.0, 60.0, 0.001),
    "serve": (180.0, 80.0, 45.0, 50.0, 0.004),
    "deliver": (175.0, 25.0, 20.0, 35.0, 0.002),
}
_GENERIC_PROFILE = (100.0, 50.0, 35.0, 45.0, 0.003)


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """AR(1) noise x_t = phi x_{t-1} + e_t with stationary standard deviation ``sigma``."""
    e = rng.normal(0.0, sigma * np.sqrt(1.0 - phi * phi), size=n)
    x = np.empty(n)
    x[0] = rng.normal(0.0, sigma)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def generate_synthetic(
    seed: int = 0,
    days: float = 3.0,
    step_seconds: int = 60,
    stages: tuple[str, ...] = DEFAULT_STAGES,
    start: str = "2026-01-05T00:00:00Z",
    name: str = "synthetic-pipeline",
) -> TelemetryDataset:
    """Generate healthy telemetry for a linear pipeline of ``stages``.

    Same seed, same dataset, exactly.
    """
    rng = np.random.default_rng(seed)
    n = int(days * 86400 // step_seconds)
    t = np.arange(n) * step_seconds
    times = pd.Timestamp(start) + pd.to_timedelta(t, unit="s")
    hour = (t / 3600.0) % 24.0
    # Daily cycle peaking mid-afternoon, a trough at night, with day-to-day wobble.
    daily = 1.0 + 0.45 * np.sin(2 * np.pi * (hour - 9.0) / 24.0)
    day_index = (t // 86400).astype(int)
    day_level = 1.0 + rng.normal(0.0, 0.05, size=day_index.max() + 1)[day_index]
    load = daily * day_level * np.exp(_ar1(rng, n, 0.97, 0.06))
    lag_steps = max(1, 60 // step_seconds)

    rows = []
    for k, stage in enumerate(stages):
        thr0, lat0, cpu0, mem0, err0 = _STAGE_PROFILE.get(stage, _GENERIC_PROFILE)
        stage_load = np.roll(load, k * lag_steps)
        stage_load[: k * lag_steps] = load[0]
        util = stage_load / stage_load.mean()
        throughput = thr0 * util * np.exp(_ar1(rng, n, 0.8, 0.03))
        # Latency grows convexly with utilisation (queueing), with heavy-ish tail noise.
        latency = lat0 * (0.7 + 0.3 * util**2) * np.exp(_ar1(rng, n, 0.6, 0.08))
        cpu = np.clip(cpu0 * util + _ar1(rng, n, 0.7, 2.5), 0.5, 100.0)
        memory = np.clip(mem0 + 4.0 * (util - 1.0) + _ar1(rng, n, 0.995, 2.0), 1.0, 100.0)
        error = np.clip(err0 * util + _ar1(rng, n, 0.5, err0 * 0.4), 0.0, 1.0)
        queue = throughput * latency / 1000.0  # Little's law, L = lambda * W
        rows.append(
            pd.DataFrame(
                {
                    TIMESTAMP: times,
                    STAGE: stage,
                    "latency_p95_ms": latency,
                    "error_rate": error,
                    "cpu_pct": cpu,
                    "memory_pct": memory,
                    "throughput_rps": throughput,
                    "queue_depth": queue,
                }
            )
        )
    frame = pd.concat(rows, ignore_index=True)
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True).dt.as_unit("ns")
    meta = {
        "name": name,
        "source": {
            "format": "synthetic",
            "generator": "healgym.telemetry.synthetic.generate_synthetic",
            "seed": seed,
            "days": days,
            "stages": list(stages),
            "healgym_version": __version__,
        },
        "synthetic": True,
        "source_files": [],
        "step_seconds": step_seconds,
        "stages": list(stages),
        "metrics": list(CANONICAL_METRICS),
        "call_graph": [[a, b] for a, b in zip(stages[:-1], stages[1:], strict=True)],
        "derived": [
            {
                "metric": "queue_depth",
                "method": "littles_law",
                "note": "throughput_rps x latency_p95_ms / 1000 (p95 as the time in system)",
            }
        ],
        "quirks": [],
    }
    return TelemetryDataset(frame=frame, metadata=meta)
