"""The generic table reader: CSV or Parquet files described entirely by a mapping YAML.

Mapping keys (see ``configs/importers/canonical.yaml`` and ``prometheus.yaml``)::

    reader: table
    files: ["*.csv", "*.parquet"]        # globs under SRC (SRC may also be one file)
    layout: wide                          # wide: a column per metric; long: metric + value
    timestamp: {column: timestamp, unit: null, format: null, timezone: UTC}
    entity: {column: stage}               # or {value: my-service} for single-entity files
    metrics: {latency_p95_ms: {column: ...}, ...}
    long: {metric_column: __name__, value_column: value}   # layout: long only
    step_seconds: null                    # null: the median spacing of the data
    faults: {file: faults.csv, start: start, end: end, entity: entity, fault_type: fault_type}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from healgym.errors import ConfigError, ImportFailed, did_you_mean
from healgym.telemetry.dataset import TelemetryDataset
from healgym.telemetry.importers.common import assemble, fault_frame, read_mapped
from healgym.telemetry.mapping import (
    MetricMap,
    metric_maps,
    parse_timestamps,
    require_columns,
)
from healgym.telemetry.quirks import QuirkLog
from healgym.telemetry.schema import STAGE, TIMESTAMP


def _files(mapping: dict[str, Any], src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    patterns = mapping.get("files") or ["*.csv", "*.parquet"]
    faults_file = (mapping.get("faults") or {}).get("file")
    found = sorted({p for pat in patterns for p in src.glob(pat)
                    if p.is_file() and p.name != faults_file})
    if not found:
        raise ImportFailed(f"no telemetry files match {patterns}", file=str(src),
                           fix="put CSV/Parquet files in SRC or set 'files' in the mapping")
    return found


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=True)
    except pd.errors.ParserError as exc:
        raise ImportFailed(f"not a readable CSV ({exc})", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ImportFailed("not a UTF-8 text file", file=str(path),
                           fix="export the telemetry as UTF-8 CSV or as Parquet") from exc


def read(mapping: dict[str, Any], src: Path) -> TelemetryDataset:
    quirks = QuirkLog()
    ts_cfg = mapping.get("timestamp") or {"column": "timestamp"}
    ent_cfg = mapping.get("entity") or {"column": "stage"}
    layout = mapping.get("layout", "wide")
    if layout not in ("wide", "long"):
        raise ConfigError(f"{mapping['_path']}: layout = {layout!r}; expected 'wide' or 'long'")
    maps = metric_maps(mapping)
    if not maps:
        raise ConfigError(f"{mapping['_path']}: 'metrics' maps no canonical metric")
    files = _files(mapping, src)
    parts = []
    for path in files:
        df = _read_table(path)
        fname = str(path)
        need = [ts_cfg["column"]] + ([ent_cfg["column"]] if "column" in ent_cfg else [])
        file_maps = maps
        if layout == "wide":
            # any subset of the mapped metrics: an absent column is an unmeasured metric
            file_maps = [m for m in maps if not m.column or m.column in df.columns]
            if not file_maps:
                require_columns(list(df.columns), need + [m.column for m in maps if m.column],
                                file=fname)
            absent = [m.column for m in maps if m.column and m.column not in df.columns]
            if absent:
                quirks.add("metric_columns_absent",
                           f"columns {absent} are not in the file: those metrics are "
                           "unmeasured (replayed as their neutral value)", file=fname)
        else:
            lc = mapping.get("long") or {}
            need += [lc.get("metric_column", "metric"), lc.get("value_column", "value")]
        require_columns(list(df.columns), need, file=fname)
        ts = parse_timestamps(df[ts_cfg["column"]], file=fname, column=ts_cfg["column"],
                              row_offset=2, unit=ts_cfg.get("unit"), fmt=ts_cfg.get("format"),
                              timezone=ts_cfg.get("timezone", "UTC"))
        entity = (df[ent_cfg["column"]].astype(str) if "column" in ent_cfg
                  else pd.Series(str(ent_cfg.get("value", path.stem)), index=df.index))
        if layout == "long":
            df = _pivot_long(df, ts, entity, mapping, maps, fname)
            ts, entity = df[TIMESTAMP], df[STAGE]
        for ent in sorted(entity.unique()):
            sel = (entity == ent).to_numpy()
            sub = df.loc[sel]

            def column(mm: MetricMap, sub: pd.DataFrame = sub) -> pd.Series:
                return sub[mm.column]

            metrics = read_mapped(column, file_maps, file=fname, row_offset=2, n_rows=len(sub),
                                  entity=ent, quirks=quirks,
                                  rows=sub.index.to_numpy() + 2 if layout == "wide" else None)
            part = pd.DataFrame(metrics, index=sub.index)
            part[TIMESTAMP], part[STAGE] = ts[sel].to_numpy(), ent
            parts.append(part)
    if not parts:
        raise ImportFailed("no data rows: the file(s) have a header and nothing else",
                           file=str(files[0] if len(files) == 1 else src), row=2,
                           expected="one row per (timestamp, stage)",
                           fix="export the telemetry with its rows")
    frame = pd.concat(parts, ignore_index=True)
    faults = _faults(mapping, src, set(frame[STAGE].astype(str)))
    return assemble(frame, name=mapping.get("name", f"{mapping['format']}-{src.stem}"),
                    source={"format": mapping["format"], "path": str(src),
                            "mapping": mapping["_path"]},
                    source_files=files, root=src if src.is_dir() else src.parent, quirks=quirks,
                    step_seconds=mapping.get("step_seconds"), faults=faults,
                    call_graph=mapping.get("call_graph"))


def _pivot_long(df: pd.DataFrame, ts: pd.Series, entity: pd.Series, mapping: dict[str, Any],
                maps: list[MetricMap], fname: str) -> pd.DataFrame:
    lc = mapping.get("long") or {}
    mcol, vcol = lc.get("metric_column", "metric"), lc.get("value_column", "value")
    long = pd.DataFrame({TIMESTAMP: ts, STAGE: entity, "m": df[mcol], "v": df[vcol]})
    wide = long.pivot_table(index=[TIMESTAMP, STAGE], columns="m", values="v",
                            aggfunc="first").reset_index()
    for mm in maps:
        if mm.column not in wide.columns:
            raise ImportFailed(f"metric {mm.column!r} never appears in column {mcol!r}",
                               file=fname, column=mcol,
                               fix="map a metric name that the export contains")
    return wide


def _faults(mapping: dict[str, Any], src: Path, entities: set[str]) -> pd.DataFrame | None:
    """The labelled fault windows, validated row by row: a window that ends before it starts,
    a fault type healgym does not know, or an entity with no telemetry is an error naming the
    file, row and column (a label that cannot be replayed must not be stored as if it could)."""
    cfg = mapping.get("faults")
    if not cfg or not src.is_dir():
        return None
    path = src / cfg.get("file", "faults.csv")
    if not path.is_file():
        return None
    from healgym.sim.faults import FAULT_NAMES  # the fault library (no import cycle at run time)

    df = _read_table(path)
    fname = str(path)
    cols = {k: cfg.get(k, k) for k in ("start", "end", "entity", "fault_type")}
    require_columns(list(df.columns), [cols["start"], cols["end"], cols["entity"]],
                    file=fname)
    start = parse_timestamps(df[cols["start"]], file=fname, column=cols["start"],
                             row_offset=2, unit=(mapping.get("timestamp") or {}).get("unit"))
    end = parse_timestamps(df[cols["end"]], file=fname, column=cols["end"], row_offset=2,
                           unit=(mapping.get("timestamp") or {}).get("unit"))
    ft = df[cols["fault_type"]] if cols["fault_type"] in df.columns else pd.Series(None,
                                                                                index=df.index)
    rows = []
    for i, (s, e, ent, f) in enumerate(zip(start, end, df[cols["entity"]], ft, strict=True)):
        line = i + 2
        if e <= s:
            raise ImportFailed("a fault window ends before it starts", file=fname, row=line,
                               column=cols["end"], value=f"start {s}, end {e}",
                               expected="end after start", fix="swap or correct the times")
        if pd.isna(ent) or str(ent) not in entities:
            raise ImportFailed(
                "a fault window's entity has no telemetry", file=fname, row=line,
                column=cols["entity"], value=None if pd.isna(ent) else str(ent),
                expected=f"one of {sorted(entities)[:12]}"
                         f"{'...' if len(entities) > 12 else ''}"
                         f"{did_you_mean(str(ent), entities) if not pd.isna(ent) else ''}",
                fix="name the stage as the telemetry does, or drop the row")
        ftype = None if pd.isna(f) or str(f).strip() == "" else str(f).strip()
        if ftype is not None and ftype not in FAULT_NAMES:
            raise ImportFailed(
                f"unknown fault type.{did_you_mean(ftype, FAULT_NAMES)}", file=fname,
                row=line, column=cols["fault_type"], value=ftype,
                expected=f"one of healgym's fault types {list(FAULT_NAMES)}, or an empty cell "
                         "for an untyped window",
                fix="use a healgym type (`healgym faults` lists them) or leave it empty")
        rows.append({"start": s, "end": e, "entity": str(ent), "fault_type": ftype,
                     "source_label": None if pd.isna(f) else str(f)})
    return fault_frame(rows)
