"""Declarative mappings from a source's columns onto the canonical metrics.

Each import format has a YAML file under ``configs/importers/`` (or anywhere, passed by path).
A metric mapping says which source column feeds a canonical metric and how to convert units::

    latency_p95_ms: {column: "PodServerLatencyP95(s)", scale: 1000}
    error_rate:     {column: "PodSuccessRate(%)", complement: 100, zero_means_missing: true}
    throughput_rps: {column: requests_per_5min, divide_by: 300}

Conversion order: ``complement`` N gives ``1 - x / N``; then ``* scale``; then ``/ divide_by``.
``zero_means_missing``: a column that is 0 in every row is a broken export, not a measurement;
it is dropped (reported as a quirk) instead of being read as, say, a 100 % error rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from healgym.errors import ConfigError, ImportFailed, did_you_mean, reject_unknown_keys
from healgym.telemetry.schema import CANONICAL_METRICS

#: Helper columns a mapping may define for derivations; not stored in the dataset.
HELPER_METRICS = ("latency_mean_ms",)
METRIC_KEYS = {"column", "metric", "statistic", "scale", "divide_by", "complement",
               "zero_means_missing"}


@dataclass(frozen=True)
class MetricMap:
    target: str
    column: str | None = None
    metric: str | None = None  # for multi-level headers (PetShop): (entity, metric, statistic)
    statistic: str | None = None
    scale: float = 1.0
    divide_by: float = 1.0
    complement: float | None = None
    zero_means_missing: bool = False

    def convert(self, x: np.ndarray) -> np.ndarray:
        if self.complement is not None:
            x = 1.0 - x / self.complement
        return x * self.scale / self.divide_by


def config_dir() -> Path:
    """The project's ``configs/`` folder (next to the package in a source checkout)."""
    import os

    env = os.environ.get("HEALGYM_CONFIG_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "configs"


def load_mapping(format_or_path: str) -> dict[str, Any]:
    """Load an importer mapping by format name (``configs/importers/NAME.yaml``) or path."""
    p = Path(format_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        path = p
    else:
        folder = config_dir() / "importers"
        path = folder / f"{format_or_path}.yaml"
        if not path.is_file():
            known = sorted(f.stem for f in folder.glob("*.yaml")) if folder.is_dir() else []
            raise ConfigError(
                f"unknown import format {format_or_path!r}.{did_you_mean(format_or_path, known)}"
                f" Known formats: {known}; or pass the path of a mapping YAML file"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or "reader" not in data:
        raise ConfigError(f"{path}: a mapping file needs a 'reader' key (table, nezha, petshop "
                          "or nab) and a 'metrics' mapping")
    data["_path"] = str(path)
    data.setdefault("format", path.stem)
    return data


def metric_maps(mapping: dict[str, Any], key: str = "metrics") -> list[MetricMap]:
    """Validate and parse a mapping's ``metrics`` section."""
    where = f"{mapping.get('_path', 'mapping')}: {key}"
    section = mapping.get(key) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected a mapping of canonical metric -> source column")
    out = []
    allowed = (*CANONICAL_METRICS, *HELPER_METRICS)
    for target, spec in section.items():
        if target not in allowed:
            raise ConfigError(f"{where}.{target}: not a canonical metric."
                              f"{did_you_mean(target, allowed)} Canonical: {list(allowed)}")
        if isinstance(spec, str):
            spec = {"column": spec}
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}.{target}: expected a column name or a mapping")
        reject_unknown_keys(spec, METRIC_KEYS, f"{where}.{target}")
        out.append(MetricMap(target=target, column=spec.get("column"),
                             metric=spec.get("metric"), statistic=spec.get("statistic"),
                             scale=float(spec.get("scale", 1.0)),
                             divide_by=float(spec.get("divide_by", 1.0)),
                             complement=None if spec.get("complement") is None
                             else float(spec["complement"]),
                             zero_means_missing=bool(spec.get("zero_means_missing", False))))
    return out


def parse_numeric(values: pd.Series, *, file: str, column: str, row_offset: int) -> np.ndarray:
    """Numbers from a source column; empty cells and 'NaN' are missing, anything else is an error.

    ``row_offset``: add to the 0-based data index to get the file's 1-based line number.
    """
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.to_numpy(dtype=float)
    num = pd.to_numeric(values, errors="coerce")
    text = values.astype("string").str.strip()
    missing_words = text.str.lower().isin(["nan", "null", "none"])
    bad = num.isna() & values.notna() & (text != "") & ~missing_words
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ImportFailed("a metric cell is not a number", file=file, row=i + row_offset,
                           column=column, value=values.iloc[i],
                           expected="a number (or an empty cell for a missing measurement)",
                           fix="correct or blank the cell, or map another column in the YAML")
    return num.to_numpy(dtype=float)


def parse_timestamps(values: pd.Series, *, file: str, column: str, row_offset: int,
                     unit: str | None = None, fmt: str | None = None,
                     timezone: str = "UTC") -> pd.Series:
    """UTC timestamps from a source column; the first unparsable cell is an error."""
    if unit is not None:
        num = pd.to_numeric(values, errors="coerce")
        ts = pd.to_datetime(num, unit=unit, utc=True, errors="coerce")
        expected = f"a unix time in {unit!r}"
    else:
        ts = pd.to_datetime(values, format=fmt, errors="coerce", utc=False)
        expected = f"a date-time ({fmt})" if fmt else "an ISO 8601 date-time"
        if getattr(ts.dt, "tz", None) is None:
            ts = ts.dt.tz_localize(timezone)
        ts = ts.dt.tz_convert("UTC")
    bad = ts.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ImportFailed("timestamp cannot be parsed", file=file, row=i + row_offset,
                           column=column, value=values.iloc[i], expected=expected,
                           fix="fix the cell, or set timestamp.unit / timestamp.format in the "
                               "mapping YAML")
    return ts.astype("datetime64[ns, UTC]")


def require_columns(columns: list[str], needed: list[str], *, file: str) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ImportFailed(
            f"column(s) {missing} missing", file=file, row=1,
            expected=f"a header with {needed}",
            fix=f"the file has {list(columns)[:12]}{'...' if len(columns) > 12 else ''}; "
                "map the right column names in the mapping YAML",
        )
