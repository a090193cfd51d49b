"""Replay of historical telemetry: healthy baselines and episode windows.

An episode's healthy behaviour is real telemetry: windows of the dataset, starting at a random
offset, resampled onto the simulator's clock by linear interpolation between real samples. When
an episode is longer than the data left after its offset, further windows are drawn at random
offsets and appended (a block bootstrap), so noise, daily cycles and correlations stay real.

Gaps: telemetry NaN cells are filled for replay only (forward fill, then backward fill within the
stage's metric), and a metric a stage never measured is replayed as a constant neutral value.
Both are counted in :attr:`ReplaySource.report` and logged once; nothing is filled on disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from healgym.errors import ConfigError
from healgym.telemetry.dataset import TelemetryDataset
from healgym.telemetry.schema import CANONICAL_SPECS, MetricSpec, unix_seconds

log = logging.getLogger(__name__)

#: Replayed in place of a metric a stage never measured (healthy, neutral values).
NEUTRAL = {m.name: m.neutral for m in CANONICAL_SPECS}
#: Smallest scale of each metric for normalisation, so a flat baseline does not divide by ~0.
SCALE_FLOOR = {m.name: m.scale_floor for m in CANONICAL_SPECS}


def bounds(specs: tuple[MetricSpec, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The physically valid range (M,) of each metric: values outside are clipped."""
    return np.array([m.lo for m in specs]), np.array([m.hi for m in specs])


LO, HI = bounds(CANONICAL_SPECS)


def _fill_column(col: np.ndarray) -> int:
    """Forward- then backward-fill NaNs in place; returns how many cells were filled."""
    nan = np.isnan(col)
    n = int(nan.sum())
    if n == 0 or n == col.size:
        return 0 if n == 0 else n
    idx = np.where(~nan, np.arange(col.size), 0)
    np.maximum.accumulate(idx, out=idx)
    col[:] = col[idx]
    first = int(np.argmax(~np.isnan(col)))
    col[:first] = col[first]
    return n


@dataclass
class ReplaySource:
    """A dataset prepared for replay of ``stages`` (stage name -> dataset entity)."""

    stages: list[str]
    entities: list[str]
    step_seconds: float
    times: np.ndarray  # (T,) unix seconds
    values: np.ndarray  # (T, S, M) gap-filled
    median: np.ndarray  # (S, M) healthy baseline
    scale: np.ndarray  # (S, M) robust scale (1.4826 MAD, floored)
    q_lo: np.ndarray  # (S, M) healthy 0.1 % quantile
    q_hi: np.ndarray  # (S, M) healthy 99.9 % quantile
    fault_windows: pd.DataFrame  # rows of the dataset's fault table whose entity is replayed
    segments: list[tuple[int, int]]  # [start, end) row runs with data (gaps of <= 3 rows bridged)
    report: dict[str, object] = field(default_factory=dict)
    metrics: tuple[MetricSpec, ...] = CANONICAL_SPECS  # the M axis of values, median, ...

    @classmethod
    def build(cls, dataset: TelemetryDataset, stages: list[str] | dict[str, str] | None = None,
              time_range: tuple[float, float] = (0.0, 1.0),
              metrics: tuple[MetricSpec, ...] = CANONICAL_SPECS) -> ReplaySource:
        """``time_range``: the fraction of the replayable span episodes may draw from, e.g.
        (0, 0.7) for training and (0.7, 1) for held-out evaluation (baselines still use the whole
        span, so both sides see the same normalisation). ``metrics``: the replayed metrics (a
        dataset column of each name; one the dataset lacks replays as its neutral value)."""
        if stages is None:
            names = entities = dataset.stages
        elif isinstance(stages, dict):
            names, entities = list(stages), list(stages.values())
        else:
            names = entities = list(stages)
        names, entities = list(names), list(entities)
        missing = [e for e in entities if e not in dataset.stages]
        if missing:
            raise ConfigError(
                f"stages: entities {missing} are not in dataset "
                f"{dataset.metadata.get('name')!r}; it has {dataset.stages}"
            )
        times, values = dataset.to_array(entities, tuple(m.name for m in metrics))
        # The replayable span: rows where every replayed stage has some measurement.
        has_data = ~np.all(np.isnan(values), axis=2)  # (T, S)
        firsts = [int(np.argmax(c)) if c.any() else -1 for c in has_data.T]
        lasts = [len(c) - 1 - int(np.argmax(c[::-1])) if c.any() else -1 for c in has_data.T]
        empty = [e for e, f in zip(entities, firsts, strict=True) if f < 0]
        if empty:
            raise ConfigError(f"stages: entities {empty} have no measurements at all")
        lo, hi = max(firsts), min(lasts)
        if hi - lo < 2:
            spans = {e: (int(times[f]), int(times[la])) for e, f, la in
                     zip(entities, firsts, lasts, strict=True)}
            raise ConfigError(
                "stages: the chosen entities share no time span in the dataset (unix-second "
                f"spans {spans}); choose entities measured over the same period"
            )
        times, values = times[lo:hi + 1], values[lo:hi + 1].copy()
        lo_f, hi_f = float(time_range[0]), float(time_range[1])
        if not 0.0 <= lo_f < hi_f <= 1.0:
            raise ConfigError(f"time_range={time_range!r}: expected 0 <= start < end <= 1 "
                              "(fractions of the replayable span)")
        valid = ~np.all(np.isnan(values), axis=(1, 2))
        n_rows = len(valid)
        allowed = np.zeros(n_rows, dtype=bool)
        allowed[int(lo_f * n_rows):max(int(hi_f * n_rows), int(lo_f * n_rows) + 2)] = True
        segments = _segments(valid & allowed, max_gap=3)
        if not segments:
            raise ConfigError(f"time_range={time_range!r} leaves no telemetry to replay")
        faults = dataset.faults[dataset.faults["entity"].isin(entities)].reset_index(drop=True)
        filled = {}
        absent = []
        for s, ent in enumerate(entities):
            for m, spec in enumerate(metrics):
                col = values[:, s, m]
                if np.all(np.isnan(col)):
                    col[:] = spec.neutral
                    absent.append(f"{ent}.{spec.name}")
                    continue
                n = _fill_column(col)
                if n:
                    filled[f"{ent}.{spec.name}"] = n
        np.clip(values, *bounds(metrics), out=values)
        healthy = _healthy_mask(times, entities, faults, dataset.step_seconds)
        median = np.empty((len(entities), len(metrics)))
        scale = np.empty_like(median)
        q_lo, q_hi = np.empty_like(median), np.empty_like(median)
        for s in range(len(entities)):
            rows = values[healthy[:, s], s, :] if healthy[:, s].any() else values[:, s, :]
            med = np.median(rows, axis=0)
            mad = np.median(np.abs(rows - med), axis=0) * 1.4826
            floor = np.array([m.scale_floor for m in metrics])
            median[s], scale[s] = med, np.maximum(np.maximum(mad, 0.05 * np.abs(med)), floor)
            q_lo[s], q_hi[s] = np.quantile(rows, 0.001, axis=0), np.quantile(rows, 0.999, axis=0)
        report = {"rows": int(len(times)), "filled_cells": filled, "absent_metrics": absent,
                  "healthy_rows": healthy.sum(axis=0).tolist()}
        if absent:
            log.warning("replay: metrics never measured, replayed as constants: %s", absent)
        if filled:
            log.info("replay: NaN cells filled by forward fill: %s", filled)
        return cls(stages=names, entities=entities, step_seconds=float(dataset.step_seconds),
                   times=times, values=values, median=median, scale=scale, q_lo=q_lo, q_hi=q_hi,
                   fault_windows=faults, segments=segments, report=report,
                   metrics=tuple(metrics))

    @property
    def _segment_array(self) -> np.ndarray:
        arr = self.__dict__.get("_seg_arr")
        if arr is None:
            arr = self.__dict__["_seg_arr"] = np.array(self.segments, dtype=np.int64)
        return arr

    def draw_rows(self, key: int, n_steps: int, dt: float, start_row: int | None = None,
                  plan: int = 0) -> np.ndarray:
        """Dataset rows that cover ``n_steps`` simulator steps (the env interpolates linearly
        between consecutive rows), drawn from an episode key by
        :func:`healgym.sim.episode.fill_rows` (the envs' own draw).

        The first window starts at ``start_row`` or a random offset; more windows are appended,
        at random offsets inside runs of real data, while the episode needs them.
        """
        from healgym.sim.episode import fill_rows

        seg = self._segment_array
        rows = np.empty(int(np.ceil(n_steps * dt / self.step_seconds)) + 2, dtype=np.int64)
        fill_rows(np.uint64(key), plan, seg[:, 0].copy(), seg[:, 1].copy(), rows.size,
                  -1 if start_row is None else int(start_row), rows)
        return rows


def _segments(valid: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Runs of valid rows, bridging gaps of at most ``max_gap`` rows; [start, end)."""
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]]) + 1
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True) if b - a >= 2]


def _healthy_mask(times: np.ndarray, entities: list[str], faults: pd.DataFrame,
                  step: float) -> np.ndarray:
    """(T, S) True where the row is outside every labelled fault window of that entity."""
    mask = np.ones((len(times), len(entities)), dtype=bool)
    if faults.empty:
        return mask
    start = unix_seconds(faults["start"])
    end = unix_seconds(faults["end"])
    for s, ent in enumerate(entities):
        sel = (faults["entity"] == ent).to_numpy()
        for a, b in zip(start[sel], end[sel], strict=True):
            mask[(times >= a - step) & (times <= b + step), s] = False
    return mask
