"""The canonical telemetry dataset: a self-describing, versioned folder.

Layout of a dataset folder::

    metadata.json        format name and version, source, file hashes, step, stages, metrics,
                         call graph, derived metrics and every quirk the importer found
    telemetry.parquet    one row per (timestamp, stage): timestamp (UTC), stage, canonical metrics
    faults.parquet       optional: start, end (UTC), entity, fault_type (null when unknown),
                         source_label

Missing measurements stay NaN: nothing is filled in on disk. The simulator decides how to replay
gaps and says so (see :mod:`healgym.sim.replay`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healgym.errors import TelemetryFormatError
from healgym.telemetry.schema import (
    CANONICAL_METRICS,
    FAULT_COLUMNS,
    STAGE,
    TIMESTAMP,
    unix_seconds,
)

log = logging.getLogger(__name__)

FORMAT_NAME = "healgym-telemetry"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)

DATA_FILE = "telemetry.parquet"
FAULTS_FILE = "faults.parquet"
META_FILE = "metadata.json"


def empty_faults() -> pd.DataFrame:
    """An empty fault-window table with the canonical columns and dtypes."""
    return pd.DataFrame(
        {
            "start": pd.Series([], dtype="datetime64[ns, UTC]"),
            "end": pd.Series([], dtype="datetime64[ns, UTC]"),
            "entity": pd.Series([], dtype="object"),
            "fault_type": pd.Series([], dtype="object"),
            "source_label": pd.Series([], dtype="object"),
        }
    )


@dataclass
class TelemetryDataset:
    """Telemetry in canonical form, with its fault windows and metadata.

    ``frame`` is long by stage and wide by metric: columns ``timestamp``, ``stage`` and the
    canonical metrics. ``faults`` is the fault-window table. ``metadata`` is what
    ``metadata.json`` holds.
    """

    frame: pd.DataFrame
    metadata: dict[str, Any]
    faults: pd.DataFrame = field(default_factory=empty_faults)

    # ----------------------------------------------------------------- accessors
    @property
    def stages(self) -> list[str]:
        return list(self.metadata["stages"])

    @property
    def step_seconds(self) -> float:
        return float(self.metadata["step_seconds"])

    @property
    def call_graph(self) -> list[tuple[str, str]]:
        return [tuple(edge) for edge in self.metadata.get("call_graph") or []]  # type: ignore[misc]

    @property
    def synthetic(self) -> bool:
        return bool(self.metadata.get("synthetic", False))

    def to_array(self, stages: list[str] | None = None,
                 metrics: tuple[str, ...] = CANONICAL_METRICS) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(times, values)`` on the dataset's regular grid.

        ``times`` is int64 unix seconds, shape (T,); ``values`` is float64, shape
        (T, len(stages), len(metrics)), NaN where nothing was measured (a metric the dataset has
        no column for is all NaN).
        """
        stages = self.stages if stages is None else stages
        unknown = [s for s in stages if s not in self.stages]
        if unknown:
            raise TelemetryFormatError(
                f"stage(s) {unknown} are not in dataset {self.metadata.get('name')!r}; "
                f"it has {self.stages}"
            )
        step = int(round(self.step_seconds))
        ts = pd.Series(unix_seconds(self.frame[TIMESTAMP]).astype(np.int64))
        start, end = int(ts.min()), int(ts.max())
        times = np.arange(start, end + step, step, dtype=np.int64)
        values = np.full((len(times), len(stages), len(metrics)), np.nan)
        idx = ((ts.to_numpy() - start) // step).astype(np.int64)
        stage_col = self.frame[STAGE].to_numpy()
        have = [i for i, m in enumerate(metrics) if m in self.frame.columns]
        cols = self.frame[[metrics[i] for i in have]].to_numpy(dtype=float)
        for j, name in enumerate(stages):
            sel = stage_col == name
            values[np.ix_(idx[sel], [j], have)] = cols[sel][:, None, :]
        return times, values

    # ----------------------------------------------------------------- persistence
    def save(self, out: str | Path) -> Path:
        """Write the dataset folder; returns its path."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        validate_frame(self.frame, where=str(out))
        frame = self.frame.sort_values([TIMESTAMP, STAGE], kind="stable").reset_index(drop=True)
        frame.to_parquet(out / DATA_FILE, index=False)
        meta = dict(self.metadata)
        meta["format"] = FORMAT_NAME
        meta["format_version"] = FORMAT_VERSION
        meta["rows"] = int(len(frame))
        if len(frame):
            meta["start"] = frame[TIMESTAMP].min().isoformat()
            meta["end"] = frame[TIMESTAMP].max().isoformat()
        meta["fault_windows"] = int(len(self.faults))
        if len(self.faults):
            self.faults[list(FAULT_COLUMNS)].to_parquet(out / FAULTS_FILE, index=False)
        elif (out / FAULTS_FILE).exists():
            (out / FAULTS_FILE).unlink()
        (out / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
        self.metadata = meta
        return out


def _json_default(obj: object) -> object:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def validate_frame(frame: pd.DataFrame, where: str) -> None:
    """Refuse a telemetry frame that lacks canonical columns or has the wrong types."""
    missing = [c for c in (TIMESTAMP, STAGE, *CANONICAL_METRICS) if c not in frame.columns]
    if missing:
        raise TelemetryFormatError(
            f"{where}: telemetry is missing column(s) {missing}; a canonical dataset has "
            f"{[TIMESTAMP, STAGE, *CANONICAL_METRICS]} (metrics may be all-NaN, but present)"
        )
    if not isinstance(frame[TIMESTAMP].dtype, pd.DatetimeTZDtype):
        raise TelemetryFormatError(
            f"{where}: column 'timestamp' has dtype {frame[TIMESTAMP].dtype}; expected "
            "timezone-aware UTC datetimes"
        )
    for m in CANONICAL_METRICS:
        if not pd.api.types.is_float_dtype(frame[m].dtype):
            raise TelemetryFormatError(
                f"{where}: metric column {m!r} has dtype {frame[m].dtype}; expected float"
            )


def load_dataset(path: str | Path) -> TelemetryDataset:
    """Load a dataset folder written by an importer or by :meth:`TelemetryDataset.save`."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise TelemetryFormatError(
            f"{path} is not a healgym telemetry dataset: {META_FILE} not found. "
            f"Create one with `healgym import FORMAT SRC --out {path}`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise TelemetryFormatError(
            f"{meta_path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    if meta.get("format") != FORMAT_NAME:
        raise TelemetryFormatError(
            f"{meta_path}: key 'format' is {meta.get('format')!r}; expected {FORMAT_NAME!r}"
        )
    version = meta.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise TelemetryFormatError(
            f"{meta_path}: format_version {version!r} is not supported by this healgym "
            f"(it reads versions {list(SUPPORTED_VERSIONS)}). Re-import the source with this "
            "version's `healgym import`, or upgrade healgym."
        )
    for key in ("stages", "step_seconds", "metrics"):
        if key not in meta:
            raise TelemetryFormatError(f"{meta_path}: required key {key!r} is missing")
    data_path = path / DATA_FILE
    if not data_path.is_file():
        raise TelemetryFormatError(f"{path}: {DATA_FILE} is missing")
    frame = pd.read_parquet(data_path)
    validate_frame(frame, where=str(data_path))
    frame[TIMESTAMP] = frame[TIMESTAMP].dt.as_unit("ns")
    faults = pd.read_parquet(path / FAULTS_FILE) if (path / FAULTS_FILE).is_file() else None
    return TelemetryDataset(frame=frame, metadata=meta, faults=faults if faults is not None
                            else empty_faults())
