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
from healgym.errors import ImportFailed
from healgym.telemetry.dataset import TelemetryDataset, empty_faults
from healgym.telemetry.mapping import MetricMap, parse_numeric
from healgym.telemetry.quirks import QuirkLog, infer_step_seconds, regularise, report_frame
from healgym.telemetry.schema import (
    CANONICAL_METRICS,
    CANONICAL_SPECS,
    FAULT_COLUMNS,
    STAGE,
    TIMESTAMP,
)

#: A JSON file beside the source data describing where it came from (``healgym generate`` writes
#: one); its keys are merged into the dataset's ``source`` and ``synthetic`` metadata.
SOURCE_SIDECAR = "healgym-source.json"

#: The fewest grid points a dataset needs to be replayed: the default split keeps the last 30 %
#: for held-out evaluation, and an episode needs at least 3 rows of its window.
MIN_REPLAY_ROWS = 10

#: A metric constant in every row at one of these levels is not a measurement of a running
#: service (a probe or an export that never worked): every request failing for the whole
#: recording, while the same source reports traffic.
IMPOSSIBLE_CONSTANTS: dict[str, float] = {"error_rate": 1.0}

_SPECS = {sp.name: sp for sp in CANONICAL_SPECS}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_mapped(get_column: Any, maps: Iterable[MetricMap], *, file: str, row_offset: int,
                n_rows: int, entity: str | None, quirks: QuirkLog,
                rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Canonical metric arrays from source columns. ``get_column(map)`` returns the source
    Series for a mapping (or raises ImportFailed naming the missing column). ``rows``: each
    value's line in the file (default: its position + ``row_offset``), for the quirks.

    Never replayed, each reported as a quirk with file, column and rows: a column 0 in every
    row where the mapping says that means a broken export (``zero_means_missing``); values
    outside a metric's physical range (non-finite, negative, an error rate above 1, a
    percentage above 100, a latency above ten minutes): set missing, so the replay never sees
    them."""
    out: dict[str, np.ndarray] = {}
    lines = np.arange(n_rows) + row_offset if rows is None else np.asarray(rows)
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
        y = mm.convert(x)
        spec = _SPECS.get(mm.target)
        if spec is not None:
            with np.errstate(invalid="ignore"):
                bad = ~np.isnan(y) & (~np.isfinite(y) | (y < spec.lo) | (y > spec.hi))
            if bad.any():
                where = np.flatnonzero(bad)
                quirks.add("out_of_range",
                           f"{int(bad.sum())} values of {mm.target} outside its physical range "
                           f"[{spec.lo:g}, {spec.hi:g}] (first: {float(x[where[0]]):g} at row "
                           f"{int(lines[where[0]])}); not replayed (left missing)",
                           entity=entity, column=label, file=file, count=int(bad.sum()),
                           rows=[int(r) for r in lines[where[:5]]])
                y = np.where(bad, np.nan, y)
        out[mm.target] = y
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
    for m, level in IMPOSSIBLE_CONSTANTS.items():
        for ent, g in frame.groupby(STAGE, sort=True):
            ok = g[m].to_numpy(dtype=float)
            ok = ok[~np.isnan(ok)]
            if ok.size > 1 and np.all(ok == level):
                quirks.add("constant_impossible",
                           f"{m} is {level:g} in all {ok.size} measured rows: not a measurement "
                           f"of a running service (a probe or export that never worked); left "
                           "missing, replayed as unmeasured", entity=str(ent), column=m)
                frame.loc[g.index, m] = np.nan
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
    points = frame.groupby(STAGE).size() if len(frame) else pd.Series(dtype=int)
    if points.empty or int(points.max()) < MIN_REPLAY_ROWS:
        raise ImportFailed(
            f"too short to replay: {int(points.max()) if len(points) else 0} time step(s) of "
            f"{step} s at most per entity", file=str(root),
            expected=f"at least {MIN_REPLAY_ROWS} rows per entity ({MIN_REPLAY_ROWS * step} s "
                     "at this step): training replays the first 70 % of the span, held-out "
                     "evaluation the last 30 %",
            fix="import a longer recording")
    short = sorted(str(e) for e, n in points.items() if n < MIN_REPLAY_ROWS)
    if short:
        quirks.add("too_short", f"fewer than {MIN_REPLAY_ROWS} rows: too short to replay on "
                                "their own", entities=short if len(short) < 50 else len(short))
    unmeasured = {m: sorted(str(e) for e, g in frame.groupby(STAGE) if g[m].isna().all())
                  for m in CANONICAL_METRICS}
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
        # the canonical metrics an entity never measured: replayed as their neutral value
        "unmeasured": {m: e for m, e in unmeasured.items() if e},
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
