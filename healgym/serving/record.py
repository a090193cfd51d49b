"""Record a pipeline's healthy telemetry from Prometheus into a healgym dataset.

The z-scores a policy sees are relative to the healthy baseline (per-stage medians and scales)
of the telemetry it was trained on. To serve on your own pipeline, record its healthy
behaviour, train on that dataset, and serve with ``dataset:`` pointing at it:

    healgym record --config serve.yaml --seconds 600 --out data/my-pipeline
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from healgym.errors import HealgymError
from healgym.serving.config import SourceConf
from healgym.sim.faults import METRICS


def record(conf: SourceConf, stages: list[str], seconds: float, out: str | Path,
           step_s: float = 1.0, end: float | None = None) -> Path:
    """Query the last ``seconds`` of every per-stage metric, import them as a canonical
    dataset at ``out``; returns the dataset folder."""
    from healgym.telemetry.importers import import_source

    end = time.time() if end is None else end
    rows: dict[tuple[float, str], dict[str, float]] = {}
    for metric in METRICS:
        template = conf.queries.get(metric)
        if template is None:
            continue
        for stage in stages:
            q = template.replace("{stage}", stage)
            params: dict[str, Any] = {"query": q, "start": end - seconds, "end": end,
                                      "step": step_s}
            r = requests.get(f"{conf.url.rstrip('/')}/api/v1/query_range", timeout=conf.timeout_s,
                             params=params)
            r.raise_for_status()
            result = r.json()["data"]["result"]
            if not result:
                raise HealgymError(f"record: {q!r} returned no data over the last {seconds:g} s")
            for ts, v in result[0]["values"]:
                rows.setdefault((float(ts), stage), {})[metric] = float(v)
    frame = pd.DataFrame([{"timestamp": pd.Timestamp(ts, unit="s"), "stage": st, **vals}
                          for (ts, st), vals in sorted(rows.items())])
    with tempfile.TemporaryDirectory() as tmp:
        frame.to_csv(Path(tmp) / "metrics.csv", index=False)
        ds = import_source("canonical", tmp)
    out = Path(out)
    ds.save(out)
    return out
