"""Fault signatures fitted from a dataset's labelled incidents (``healgym calibrate``).

For each labelled fault type, against the entity's healthy level just before each window (the
median of its rows in the hour before, away from every labelled window; the whole span's
healthy median where that hour has too few), every window gives one estimate per metric, in
the fault library's semantics (``metric = baseline * (1 + mult) + add``):

* ``mult`` for the metrics that scale (latency, throughput, queue depth): the window's median
  over the baseline's, minus 1;
* ``add`` for the bounded ones (error rate, CPU, memory): the window's median minus the
  baseline's.

The fitted effect is the median over the windows, with a 95 % bootstrap interval (seeded); a
metric *moves* when that interval excludes zero and the median passes a floor (:data:`FLOORS`),
from at least :data:`MIN_WINDOWS` windows; only moving metrics enter the fitted signature. The
onset ramp is the median time from a window's start until its most-moved metric first reaches
90 % of the level it holds over the window's second half; the observed duration is the labels'
median length (reported; not applied: an injected fault ends when the experimenters stop it,
not by its nature). The
spread is, per fitted metric, the median share of the entity's own effect that its call-graph
neighbours show in the same window (clipped to [0, 1]); the metrics with a share of at least
:data:`SPREAD_MIN` spread, at their median share.

The env takes the result in place of the built-in signatures for the types it covers
(``gym.make(..., faults="faults.yaml")``; Hydra ``env.faults=...``): see
:func:`healgym.sim.faults.calibrated_specs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from healgym.telemetry.dataset import TelemetryDataset
from healgym.telemetry.schema import STAGE, TIMESTAMP, unix_seconds

#: Metrics whose fault effect is relative (mult); the others are absolute (add).
MULT_METRICS = ("latency_p95_ms", "throughput_rps", "queue_depth")
ADD_METRICS = ("error_rate", "cpu_pct", "memory_pct")
#: The smallest mean effect that counts as a move.
FLOORS = {"latency_p95_ms": 0.1, "throughput_rps": 0.1, "queue_depth": 0.1,
          "error_rate": 0.01, "cpu_pct": 2.0, "memory_pct": 2.0}
MIN_WINDOWS = 3
#: Rows this close to a labelled window are left out of the healthy baseline, s.
MARGIN_S = 600.0
#: The healthy level is taken over this long before a window, s (see ``local_base``).
LOCAL_S = 3600.0
#: A metric spreads to neighbours when they show at least this share of the effect.
SPREAD_MIN = 0.1
FORMAT = "healgym-fault-signatures"


def _median_interval(x: np.ndarray, seed: int = 0, reps: int = 2000
                     ) -> tuple[float, float, float]:
    """The median of the per-window effects and its 95 % bootstrap percentile interval
    (seeded): robust to the one window where a service fell over."""
    m = float(np.median(x))
    if x.size < 2:
        return m, m, m
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(x, size=(reps, x.size), replace=True), axis=1)
    return m, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def _effect(metric: str, window: np.ndarray, base: float) -> float:
    w = window[~np.isnan(window)]
    if w.size == 0 or not np.isfinite(base):
        return float("nan")
    if metric in MULT_METRICS:
        return float(np.median(w) / base - 1.0) if base > 0 else float("nan")
    return float(np.median(w) - base)


def calibrate(ds: TelemetryDataset, min_windows: int = MIN_WINDOWS) -> dict[str, Any]:
    """The fitted signatures of ``ds``'s labelled fault types (see the module docstring)."""
    frame, faults = ds.frame, ds.faults
    metrics = [m for m in (*MULT_METRICS, *ADD_METRICS) if m in frame.columns]
    t = unix_seconds(frame[TIMESTAMP])
    starts, ends = unix_seconds(faults["start"]), unix_seconds(faults["end"])
    near = np.zeros(len(frame), dtype=bool)
    for s, e in zip(starts, ends, strict=True):
        near |= (t >= s - MARGIN_S) & (t <= e + MARGIN_S)
    stage = frame[STAGE].to_numpy()
    base = {ent: {m: float(np.nanmedian(g[m])) if g[m].notna().any() else float("nan")
                  for m in metrics}
            for ent, g in frame[~near].groupby(STAGE)}

    def local_base(ent: str, start: float) -> dict[str, float]:
        """The entity's healthy level just before a window: the median of its rows in the
        :data:`LOCAL_S` before the start that lie near no labelled window (so a daily cycle
        is not read as the fault's effect); the whole-span healthy median where too few."""
        sel = (stage == ent) & ~near & (t >= start - LOCAL_S) & (t < start)
        g = frame.loc[sel]
        return {m: float(np.nanmedian(g[m])) if g[m].notna().sum() >= 3 else base[ent][m]
                for m in metrics}

    neighbours: dict[str, set[str]] = {}
    for a, b in ds.call_graph:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    step = float(ds.step_seconds)
    out: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    labels = faults["fault_type"].where(faults["fault_type"].notna(), None)
    for ftype in sorted({f for f in labels if isinstance(f, str)}):
        rows = np.flatnonzero((labels == ftype).to_numpy())
        per: dict[str, list[float]] = {m: [] for m in metrics}
        ramps, used, ents = [], 0, set()
        spread: dict[str, list[float]] = {}
        durations = [float(ends[i] - starts[i]) for i in rows]
        for i in rows:
            ent = str(faults["entity"].iloc[i])
            if ent not in base:
                continue
            sel = (stage == ent) & (t >= starts[i]) & (t <= ends[i])
            if not sel.any():
                continue
            win = frame.loc[sel].sort_values(TIMESTAMP)
            lvl = local_base(ent, starts[i])
            eff = {m: _effect(m, win[m].to_numpy(dtype=float), lvl[m]) for m in metrics}
            if all(np.isnan(v) for v in eff.values()):
                continue
            used += 1
            ents.add(ent)
            for m, v in eff.items():
                if np.isfinite(v):
                    per[m].append(v)
            # the ramp: when the most-moved metric (relative to its floor) first nears its peak
            top = max((m for m in metrics if np.isfinite(eff[m])),
                      key=lambda m: abs(eff[m]) / FLOORS[m])
            x = win[top].to_numpy(dtype=float)
            dev = (x / lvl[top] - 1.0) if top in MULT_METRICS else x - lvl[top]
            dev = np.abs(np.nan_to_num(dev))
            plateau = float(np.median(dev[len(dev) // 2:])) if len(dev) else 0.0
            if plateau > 0:  # the first row at 90 % of the level the window's second half holds
                first = int(np.argmax(dev >= 0.9 * plateau))
                ramps.append(first * step)
            for nb in neighbours.get(ent, ()):
                if nb not in base:
                    continue
                nsel = (stage == nb) & (t >= starts[i]) & (t <= ends[i])
                nwin = frame.loc[nsel]
                if nwin.empty:
                    continue
                nb_base = local_base(nb, starts[i])
                for m in metrics:  # each metric the fault clearly moved on its own stage
                    if not np.isfinite(eff[m]) or abs(eff[m]) < FLOORS[m]:
                        continue
                    ne = _effect(m, nwin[m].to_numpy(dtype=float), nb_base[m])
                    if np.isfinite(ne):
                        spread.setdefault(m, []).append(float(np.clip(ne / eff[m], 0.0, 1.0)))
        if used < min_windows:
            skipped[ftype] = f"{used} usable window(s); at least {min_windows} needed"
            continue
        fit: dict[str, Any] = {"windows": used, "entities": sorted(ents), "mult": {}, "add": {},
                               "effects": {}}
        for m in metrics:
            x = np.asarray(per[m], dtype=float)
            if x.size < min_windows:
                continue
            mean, lo, hi = _median_interval(x)
            moves = (lo > 0 or hi < 0) and abs(mean) >= FLOORS[m]
            kind = "mult" if m in MULT_METRICS else "add"
            if kind == "mult":
                mean, lo, hi = (max(v, -1.0) for v in (mean, lo, hi))  # a metric cannot go < 0
            fit["effects"][m] = {"kind": kind, "median": round(mean, 4), "ci95": [round(lo, 4),
                                                                             round(hi, 4)],
                                 "windows": int(x.size), "moves": bool(moves)}
            if moves:
                fit[kind][m] = round(mean, 4)
        if not fit["mult"] and not fit["add"]:
            skipped[ftype] = (f"{used} windows, but no metric moved beyond its floor with a "
                              "95 % interval excluding zero")
            continue
        fit["ramp_s"] = float(np.median(ramps)) if ramps else 0.0
        fit["observed_duration_s"] = float(np.median(durations))
        # the spread: per fitted metric, the median share of the effect a neighbour shows; the
        # metrics that spread (a share of at least SPREAD_MIN) and their median share
        shares = {m: float(np.median(v)) for m, v in spread.items()
                  if m in fit["mult"] or m in fit["add"]}
        spreading = sorted(m for m, v in shares.items() if v >= SPREAD_MIN)
        fit["propagate"] = round(float(np.median([shares[m] for m in spreading])), 4) \
            if spreading else 0.0
        fit["propagate_metrics"] = spreading
        fit["neighbour_shares"] = {m: round(v, 4) for m, v in shares.items()}
        fit["neighbour_samples"] = sum(len(v) for v in spread.values())
        out[ftype] = fit
    untyped = int(labels.isna().sum())
    return {"format": FORMAT, "format_version": 1,
            "source": {"dataset": ds.metadata.get("name"), "windows": int(len(faults)),
                       "untyped_windows": untyped, "step_seconds": step},
            "faults": out, "not_fitted": skipped}


def write(result: dict[str, Any], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Fault signatures fitted by `healgym calibrate` from "
              f"{result['source']['dataset']!r}; the env takes them with faults={out.name}\n"
              "# (mult: relative change, add: absolute change, at full intensity; effects: every\n"
              "# metric's estimate with its 95 % interval over the windows)\n")
    out.write_text(header + yaml.safe_dump(result, sort_keys=False))
    return out


def _metrics(names: Any) -> str:
    return f"({', '.join(names)})" if names else ""


def comparison_table(result: dict[str, Any]) -> str:
    """Markdown: each fitted type's signature beside the built-in one."""
    from healgym.sim.faults import BY_NAME

    def sig(mult: dict[str, float], add: dict[str, float]) -> str:
        parts = [f"{m} x{1 + v:.2f}" for m, v in mult.items()]
        parts += [f"{m} {v:+.3g}" for m, v in add.items()]
        return ", ".join(parts) or "-"

    rows = ["| fault | windows | fitted (ramp) | built-in (ramp) | spread fitted / built-in |",
            "|---|---|---|---|---|"]
    for name, fit in result["faults"].items():
        spec = BY_NAME[name]
        rows.append(f"| {name} | {fit['windows']} | {sig(fit['mult'], fit['add'])} "
                    f"({fit['ramp_s']:.0f} s) | {sig(spec.mult, spec.add)} ({spec.ramp_s:.0f} s)"
                    f" | {fit['propagate']:.2f} {_metrics(fit['propagate_metrics'])} / "
                    f"{spec.propagate:.2f} {_metrics(spec.propagate_metrics)} |")
    for name, why in result["not_fitted"].items():
        rows.append(f"| {name} | - | not fitted: {why} | | |")
    return "\n".join(rows)


def load(path: str | Path) -> dict[str, Any]:
    """A fitted-signature file, validated (the format, known fault types and metrics)."""
    from healgym.errors import ConfigError, did_you_mean
    from healgym.sim.faults import FAULT_NAMES

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"faults={str(path)!r}: no such file; make one with `healgym "
                          "calibrate DATASET --out faults.yaml`") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"faults={str(path)!r}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"faults={str(path)!r}: not a fitted-signature file (format "
                          f"{FORMAT!r}, written by `healgym calibrate`)")
    for name, fit in (data.get("faults") or {}).items():
        if name not in FAULT_NAMES:
            raise ConfigError(f"{path}: faults.{name}: not a fault type."
                              f"{did_you_mean(str(name), FAULT_NAMES)}")
        for kind, allowed in (("mult", MULT_METRICS), ("add", ADD_METRICS)):
            for m, v in (fit.get(kind) or {}).items():
                if m not in allowed:
                    raise ConfigError(f"{path}: faults.{name}.{kind}.{m}: {kind} takes "
                                      f"{list(allowed)}{did_you_mean(str(m), allowed)}")
                if not isinstance(v, (int, float)) or not np.isfinite(v):
                    raise ConfigError(f"{path}: faults.{name}.{kind}.{m} = {v!r}: a number")
    return data


def effect_frame(result: dict[str, Any]) -> pd.DataFrame:
    """One row per (fault, metric) estimate, for notebooks."""
    return pd.DataFrame([{"fault": f, "metric": m, **{k: v for k, v in e.items() if k != "ci95"},
                          "ci_low": e["ci95"][0], "ci_high": e["ci95"][1]}
                         for f, fit in result["faults"].items()
                         for m, e in fit["effects"].items()])
