"""The canonical telemetry schema: metric names carry their units."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class MetricSpec:
    """One per-stage metric: its name (with its unit), what it measures, its physically valid
    range (the simulator clips to it), the healthy value replayed where a stage never measured
    it, and the smallest robust scale used to normalise it (so a flat baseline does not divide
    by ~0). The canonical six below come first in every model; a pipeline may add more
    (``PipelineConfig.extra_metrics``), replayed from a dataset column of the same name."""

    name: str
    doc: str
    lo: float = 0.0
    hi: float = 1e9
    neutral: float = 0.0
    scale_floor: float = 1.0

    @classmethod
    def from_value(cls, value: MetricSpec | dict[str, object], where: str = "extra_metrics"
                   ) -> MetricSpec:
        from healgym.errors import ConfigError, did_you_mean

        if isinstance(value, MetricSpec):
            spec = value
        elif isinstance(value, dict):
            known = [f.name for f in dataclasses.fields(cls)]
            for key in value:
                if key not in known:
                    raise ConfigError(f"{where}: unknown metric field {key!r}."
                                      f"{did_you_mean(str(key), known)} Known: {known}")
            if "name" not in value:
                raise ConfigError(f"{where}: a metric needs a 'name' (e.g. 'disk_util_pct')")
            try:
                spec = cls(**{k: (str(v) if k in ("name", "doc") else float(v))  # type: ignore[arg-type]
                              for k, v in {"doc": "", **value}.items()})
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: metric {value!r}: lo, hi, neutral and scale_floor "
                                  f"must be numbers ({exc})") from None
        else:
            raise ConfigError(f"{where}: {value!r} is not a metric (give a mapping with name, "
                              "lo, hi, neutral, scale_floor)")
        if not spec.name.isidentifier():
            raise ConfigError(f"{where}: metric name {spec.name!r} must be an identifier "
                              "(letters, digits, _), e.g. 'disk_util_pct'")
        if not (spec.lo < spec.hi and spec.lo <= spec.neutral <= spec.hi
                and spec.scale_floor > 0):
            raise ConfigError(f"{where}: metric {spec.name!r} needs lo < hi, lo <= neutral <= "
                              f"hi and scale_floor > 0 (got lo={spec.lo}, hi={spec.hi}, "
                              f"neutral={spec.neutral}, scale_floor={spec.scale_floor})")
        return spec


#: Canonical per-stage metrics, in the fixed order the simulator uses.
CANONICAL_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("latency_p95_ms", "95th-percentile request latency, milliseconds",
               0.0, 600_000.0, 50.0, 2.0),
    MetricSpec("error_rate", "fraction of requests that failed, 0..1", 0.0, 1.0, 0.0, 0.01),
    MetricSpec("cpu_pct", "CPU utilisation of the stage, percent of its allocation",
               0.0, 100.0, 30.0, 2.0),
    MetricSpec("memory_pct", "memory utilisation of the stage, percent of its limit",
               0.0, 100.0, 50.0, 2.0),
    MetricSpec("throughput_rps", "requests (or records) processed per second",
               0.0, 1e9, 100.0, 0.5),
    MetricSpec("queue_depth",
               "requests in flight or waiting (Little's law: throughput x latency)",
               0.0, 1e9, 5.0, 0.5),
)
CANONICAL_METRICS: tuple[str, ...] = tuple(s.name for s in CANONICAL_SPECS)
METRIC_DOCS: dict[str, str] = {s.name: s.doc for s in CANONICAL_SPECS}
#: Physically valid range of each metric; values outside are clipped by the simulator.
METRIC_BOUNDS: dict[str, tuple[float, float]] = {s.name: (s.lo, s.hi) for s in CANONICAL_SPECS}


def metric_specs(extra: tuple[MetricSpec | dict[str, object], ...] | list | None = None
                 ) -> tuple[MetricSpec, ...]:
    """The canonical metrics followed by ``extra`` (validated; names must be new)."""
    from healgym.errors import ConfigError

    specs = list(CANONICAL_SPECS)
    for i, value in enumerate(extra or ()):
        spec = MetricSpec.from_value(value, f"extra_metrics[{i}]")
        if spec.name in {s.name for s in specs}:
            raise ConfigError(f"extra_metrics[{i}]: metric {spec.name!r} is already in the "
                              f"model ({[s.name for s in specs]}); give a new name")
        specs.append(spec)
    return tuple(specs)


TIMESTAMP = "timestamp"
STAGE = "stage"
FAULT_COLUMNS: tuple[str, ...] = ("start", "end", "entity", "fault_type", "source_label")


def unix_seconds(values: object) -> np.ndarray:
    """Float unix seconds of a datetime Series, whatever its stored resolution (ns, us, ms, s)."""
    series = pd.Series(values)
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        series = pd.to_datetime(series, utc=True)
    return series.dt.as_unit("ns").astype("int64").to_numpy() / 1e9
