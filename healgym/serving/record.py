"""Record a pipeline's healthy telemetry from Prometheus into a healgym dataset.

The z-scores a policy sees are relative to the healthy baseline (per-stage medians and scales)
of the telemetry it was trained on. To serve on your own pipeline, record its healthy
behaviour, train on that dataset, and serve with ``dataset:`` pointing at it:

    healgym record --config serve.yaml --seconds 600 --out data/my-pipeline
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from healgym.errors import HealgymError
from healgym.serving.config import SourceConf
from healgym.sim.faults import METRICS

log = logging.getLogger(__name__)


#: A row is healthy when the stage answered (throughput or latency above zero), failed at most
#: this share of requests, and had a replica up (where ``replicas`` is queried).
MAX_HEALTHY_ERROR_RATE = 0.05
#: Below this share of healthy rows the recording is suspect: a warning (the baseline is then
#: built from few rows, perhaps of an unusual period).
MIN_HEALTHY_SHARE = 0.8


def row_health(vals: dict[str, float], max_error_rate: float = MAX_HEALTHY_ERROR_RATE
               ) -> str | None:
    """Why a recorded (time, stage) row is not healthy telemetry, or None when it is: the
    target was down (no replica up; or neither traffic nor latency: the zeros an
    ``or on() vector(0)`` query gives for an absent series), failing (error rate above
    ``max_error_rate``), or not measured (a required metric had no sample at that time)."""
    if vals.get("replicas") is not None and vals["replicas"] < 1:
        return "down"
    if "latency_p95_ms" not in vals or "error_rate" not in vals or "throughput_rps" not in vals:
        return "not_measured"
    if vals["throughput_rps"] <= 0 and vals["latency_p95_ms"] <= 0:
        return "down"
    if vals["error_rate"] > max_error_rate:
        return "failing"
    return None


def record(conf: SourceConf, stages: list[str], seconds: float, out: str | Path,
           step_s: float = 1.0, end: float | None = None, name: str | None = None,
           max_error_rate: float = MAX_HEALTHY_ERROR_RATE,
           min_healthy_share: float = MIN_HEALTHY_SHARE) -> Path:
    """Query the last ``seconds`` of every per-stage metric and import the healthy rows as a
    canonical dataset at ``out`` (named ``name``, default the folder's name); returns the
    dataset folder.

    The baseline a policy's z-scores are measured against must be healthy behaviour: every
    timestamp at which any stage was down, failing or unmeasured (:func:`row_health`) is left
    out and counted by reason in the dataset's ``recording`` metadata. Too few healthy rows to
    replay: refused, saying why; a healthy share below ``min_healthy_share``: a warning."""
    from healgym.telemetry.importers import import_source
    from healgym.telemetry.importers.common import MIN_REPLAY_ROWS

    end = time.time() if end is None else end
    rows: dict[tuple[float, str], dict[str, float]] = {}
    for metric in (*METRICS, "replicas"):
        template = conf.queries.get(metric)
        if template is None:
            continue
        for stage in stages:
            q = template.replace("{stage}", stage)
            params: dict[str, Any] = {"query": q, "start": end - seconds, "end": end,
                                      "step": step_s}
            try:
                r = requests.get(f"{conf.url.rstrip('/')}/api/v1/query_range",
                                 timeout=conf.timeout_s, params=params)
                r.raise_for_status()
            except requests.RequestException as exc:
                raise HealgymError(f"record: Prometheus at {conf.url} did not answer {q!r} "
                                   f"({exc}); check source.url") from None
            result = r.json()["data"]["result"]
            if not result:
                if metric == "replicas":
                    continue
                raise HealgymError(f"record: {q!r} returned no data over the last {seconds:g} s")
            for ts, v in result[0]["values"]:
                rows.setdefault((float(ts), stage), {})[metric] = float(v)
    times = sorted({ts for ts, _ in rows})
    excluded: dict[str, int] = {}
    unhealthy: set[float] = set()
    for ts in times:
        reasons = [row_health(rows.get((ts, st), {}), max_error_rate) for st in stages]
        bad = next((r for r in reasons if r is not None), None)
        if bad is not None:
            unhealthy.add(ts)
            excluded[bad] = excluded.get(bad, 0) + 1
    kept = [ts for ts in times if ts not in unhealthy]
    share = len(kept) / len(times) if times else 0.0
    summary = {"seconds": seconds, "step_s": step_s, "timestamps": len(times),
               "kept": len(kept), "excluded": excluded, "healthy_share": round(share, 4),
               "max_error_rate": max_error_rate}
    if len(kept) < MIN_REPLAY_ROWS:
        raise HealgymError(
            f"record: only {len(kept)} of {len(times)} timestamps were healthy (excluded: "
            f"{excluded or 'none'}: down = no replica up or no traffic and no latency, failing "
            f"= error rate above {max_error_rate:g}, not_measured = a required metric had no "
            f"sample); a baseline needs at least {MIN_REPLAY_ROWS}. Record while the pipeline "
            "is healthy, for longer (--seconds), or after it has warmed up")
    if share < min_healthy_share:
        log.warning("record: only %.0f %% of the timestamps were healthy (excluded %s); the "
                    "baseline is built from the other %d: record a longer, quieter period if "
                    "that is not what the pipeline normally looks like", 100 * share, excluded,
                    len(kept))
    out = Path(out)
    frame = pd.DataFrame([{"timestamp": pd.Timestamp(ts, unit="s"), "stage": st,
                           **{k: v for k, v in rows.get((ts, st), {}).items() if k in METRICS}}
                          for ts in kept for st in stages])
    with tempfile.TemporaryDirectory() as tmp:
        frame.to_csv(Path(tmp) / "metrics.csv", index=False)
        ds = import_source("canonical", tmp)
    ds.metadata["name"] = name or out.name
    ds.metadata["source"] = {"format": "prometheus-record", "url": conf.url,
                             "stages": list(stages), "queries": dict(conf.queries)}
    ds.metadata["source_files"] = []
    ds.metadata["recording"] = summary
    ds.save(out)
    return out
