"""Detection and reporting of the mess real telemetry has: gaps, NaN minutes, off-grid clocks,
duplicates, constant-zero columns, negative values. Reported, never silently repaired."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from healgym.telemetry.schema import CANONICAL_METRICS, STAGE, TIMESTAMP, unix_seconds


@dataclass
class QuirkLog:
    """Quirks found while importing; written into ``metadata.json``."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, detail: str, **where: Any) -> None:
        self.items.append({"kind": kind, "detail": detail,
                           **{k: v for k, v in where.items() if v is not None}})

    def kinds(self) -> set[str]:
        return {q["kind"] for q in self.items}


def infer_step_seconds(frame: pd.DataFrame) -> int:
    """The median spacing of each entity's timestamps, in whole seconds."""
    diffs = []
    for _, g in frame.groupby(STAGE, sort=False):
        t = np.sort(unix_seconds(g[TIMESTAMP])).astype(np.int64)
        if len(t) > 1:
            diffs.append(np.diff(t))
    if not diffs:
        return 60
    d = np.concatenate(diffs)
    d = d[d > 0]
    return int(np.median(d)) if d.size else 60


def regularise(frame: pd.DataFrame, step: int, quirks: QuirkLog) -> pd.DataFrame:
    """Snap timestamps to the step grid, drop duplicate (timestamp, stage) rows, report both."""
    secs = unix_seconds(frame[TIMESTAMP])
    snapped = np.floor(secs / step) * step
    offset = secs - snapped
    if np.any(offset > 0):
        quirks.add("off_grid_timestamps",
                   f"{int((offset > 0).sum())} timestamps were not on the {step} s grid "
                   f"(largest offset {offset.max():.1f} s); floored to the grid")
    frame = frame.copy()
    frame[TIMESTAMP] = pd.to_datetime(snapped.astype(np.int64), unit="s", utc=True).astype(
        "datetime64[ns, UTC]")
    dup = frame.duplicated([TIMESTAMP, STAGE], keep="first")
    if dup.any():
        counts = frame.loc[dup, STAGE].value_counts().to_dict()
        quirks.add("duplicate_rows",
                   f"{int(dup.sum())} rows repeat a (timestamp, stage) already seen; the first "
                   f"was kept: {counts}")
        frame = frame.loc[~dup]
    return frame.sort_values([TIMESTAMP, STAGE], kind="stable").reset_index(drop=True)


def report_frame(frame: pd.DataFrame, step: int, quirks: QuirkLog) -> None:
    """Gaps, NaN cells, metrics never measured, and negative values, per stage."""
    for stage, g in frame.groupby(STAGE, sort=True):
        t = unix_seconds(g[TIMESTAMP]).astype(np.int64)
        if len(t) > 1:
            expected = (t.max() - t.min()) // step + 1
            missing = int(expected - len(np.unique(t)))
            if missing > 0:
                largest = int(np.diff(np.sort(t)).max() // step - 1)
                quirks.add("gaps", f"{missing} of {expected} grid points have no row (largest "
                                   f"gap {largest} steps); left as gaps, not filled",
                           entity=stage, count=missing)
        for m in CANONICAL_METRICS:
            col = g[m].to_numpy(dtype=float)
            n_nan = int(np.isnan(col).sum())
            if n_nan == len(col):
                continue  # reported once per metric below
            if n_nan:
                quirks.add("nan_cells", f"{n_nan} of {len(col)} rows ({100 * n_nan / len(col):.1f}"
                                        " %) have no value; left as NaN",
                           entity=stage, column=m, count=n_nan)
            neg = int((col < 0).sum())
            if neg:
                quirks.add("negative_values", f"{neg} negative values in a non-negative metric",
                           entity=stage, column=m, count=neg)
    for m in CANONICAL_METRICS:
        absent = sorted(s for s, g in frame.groupby(STAGE) if g[m].isna().all())
        if absent:
            quirks.add("metric_absent", f"no source value for {m}; column left all-NaN",
                       column=m, entities=absent if len(absent) < 50 else len(absent))
