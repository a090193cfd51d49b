"""What every importer shares: reading mapped columns, deriving missing metrics, assembling and
describing the dataset."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healgym import __version__
from healgym.telemetry.dataset import TelemetryDataset, empty_faults
from healgym.telemetry.mapping import MetricMap, parse_numeric
from healgym.telemetry.quirks import QuirkLog, infer_step_seconds, regularise, report_frame
from healgym.telemetry.schema import CANONICAL_METRICS, FAULT_COLUMNS, STAGE, TIMESTAMP

#: A JSON file beside the source data describing where it came from (``healgym generate`` writes
#: one); its keys are merged into the dataset's ``source`` and ``synthetic`` metadata.
SOURCE_SIDECAR = "healgym-source.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_mapped(get_column: Any, maps: Iterable[MetricMap], *, file: str, row_offset: int,
                n_rows: int, entity: str | None, quirks: QuirkLog) -> dict[str, np.ndarray]:
    """Canonical metric arrays from source columns. ``get_column(map)`` returns the source
    Series for a mapping (or raises ImportFailed naming the missing column)."""
    out: dict[str, np.ndarray] = {}
    for mm in maps:
        series = get_column(mm)
        label = mm.column or f"{mm.metric}/{mm.statistic}"
        x = parse_numeric(series, file=file, column=label, row_offset=row_offset)
        finite = x[~np.isnan(x)]
        if finite.size and np.all(finite == 0):
            if mm.zero_means_missing:
                quirks.add("constant_zero_column",
                           f"{label} is 0 in every row; a broken export, not a measurement: "
                           f"{mm.target} left missing", entity=entity, column=label, file=file)
                out[mm.target] = np.full(n_rows, np.nan)
                continue
            quirks.add("constant_zero_column", f"{label} is 0 in every row (kept as measured)",
                       entity=entity, column=label, file=file)
        out[mm.target] = mm.convert(x)
    return out


def assemble(
    frame: pd.DataFrame,
    *,
    name: str,
    source: dict[str, Any],
    source_files: list[Path],
    root: Path,
    quirks: QuirkLog,
    step_seconds: int | None = None,
    faults: pd.DataFrame | None = None,
    call_graph: list[tuple[str, str]] | None = None,
    notes: list[str] | None = None,
) -> TelemetryDataset:
    """Regularise, derive, report and describe an imported frame."""
    for m in CANONICAL_METRICS:
        if m not in frame.columns:
            frame[m] = np.nan
    step = int(step_seconds) if step_seconds else infer_step_seconds(frame)
    frame = regularise(frame, step, quirks)
    derived = []
    qd = frame["queue_depth"].to_numpy(dtype=float)
    if np.isnan(qd).all() and frame["throughput_rps"].notna().any():
        if "latency_mean_ms" in frame.columns and frame["latency_mean_ms"].notna().any():
            lat, which = frame["latency_mean_ms"], "latency_mean_ms (mean time in system)"
        else:
            lat, which = frame["latency_p95_ms"], "latency_p95_ms (p95: an upper estimate)"
        frame["queue_depth"] = frame["throughput_rps"] * lat / 1000.0
        if frame["queue_depth"].notna().any():  # only where a stage has both inputs
            derived.append({"metric": "queue_depth", "method": "littles_law",
                            "note": f"L = lambda W: throughput_rps x {which} / 1000; the "
                                    "source has no queue depth"})
    frame = frame[[TIMESTAMP, STAGE, *CANONICAL_METRICS]].copy()
    for m in CANONICAL_METRICS:
        frame[m] = frame[m].astype(float)
    frame[STAGE] = frame[STAGE].astype(str)
    report_frame(frame, step, quirks)
    if faults is None or faults.empty:
        faults = empty_faults()
    else:
        faults = faults[list(FAULT_COLUMNS)].reset_index(drop=True)
    stages = sorted(frame[STAGE].unique().tolist())
    sidecar = root / SOURCE_SIDECAR
    synthetic = False
    if sidecar.is_file():
        import json

        extra = json.loads(sidecar.read_text())
        synthetic = bool(extra.pop("synthetic", False))
        source = {**source, "origin": extra}
        if "stages" in extra:
            stages = [s for s in extra["stages"] if s in stages] + [
                s for s in stages if s not in extra["stages"]]
    meta = {
        "name": name,
        "source": {**source, "imported_by": f"healgym {__version__}"},
        "synthetic": synthetic,
        "source_files": [{"path": str(p.relative_to(root)) if p.is_relative_to(root) else str(p),
                          "sha256": sha256(p)} for p in sorted(set(source_files))],
        "step_seconds": step,
        "stages": stages,
        "metrics": list(CANONICAL_METRICS),
        "call_graph": [list(e) for e in call_graph] if call_graph else None,
        "derived": derived,
        "quirks": quirks.items,
        "notes": notes or [],
    }
    return TelemetryDataset(frame=frame, metadata=meta, faults=faults)


def fault_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return empty_faults()
    df = pd.DataFrame(rows)
    df["start"] = pd.to_datetime(df["start"], utc=True).astype("datetime64[ns, UTC]")
    df["end"] = pd.to_datetime(df["end"], utc=True).astype("datetime64[ns, UTC]")
    for c in ("entity", "fault_type", "source_label"):
        df[c] = df[c].astype(object)
    return df[list(FAULT_COLUMNS)]
