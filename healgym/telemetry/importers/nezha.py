"""Reader for the Nezha RCA dataset (OnlineBoutique and TrainTicket, 1-minute pod metrics).

SRC is one day's folder, e.g. ``nezha/rca_data/2022-08-22`` (holding ``metric/`` and the fault
list). Column mapping, units and fault-type names come from ``configs/importers/nezha.yaml``.
Known quirks it detects and corrects (see the dataset's PROVENANCE.md): a pod file whose unix
``TimeStamp`` is offset from its ``Time`` string (time is taken from ``Time``), a fault list whose
``inject_timestamp`` is hours off ``inject_time`` (``inject_time`` is used), success-rate columns
that are 0 in every row, NaN minutes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healgym.errors import ImportFailed
from healgym.telemetry.dataset import TelemetryDataset
from healgym.telemetry.importers.common import assemble, fault_frame, read_mapped
from healgym.telemetry.mapping import (
    MetricMap,
    metric_maps,
    parse_numeric,
    parse_timestamps,
    require_columns,
)
from healgym.telemetry.quirks import QuirkLog
from healgym.telemetry.schema import STAGE, TIMESTAMP, unix_seconds


def _day_dir(src: Path) -> Path:
    if (src / "metric").is_dir():
        return src
    days = sorted(p for p in src.glob("rca_data/*") if (p / "metric").is_dir())
    days += sorted(p for p in src.glob("*") if (p / "metric").is_dir())
    raise ImportFailed(
        "SRC is not a Nezha day folder (it has no metric/ folder)", file=str(src),
        fix="pass one day's folder" + (f", one of: {[str(d) for d in days]}" if days else ""),
    )


def _parse_time(values: pd.Series, file: str, cfg: dict[str, Any]) -> pd.Series:
    # "2022-08-22 03:51:19.607158889 +0000 UTC m=+0.113" -> the date and time tokens
    head = values.astype(str).str.extract(r"^(\S+ \S+)")[0]
    return parse_timestamps(head.where(head.notna(), values), file=file,
                            column=cfg.get("column", "Time"), row_offset=2,
                            fmt=cfg.get("format"))


def read(mapping: dict[str, Any], src: Path) -> TelemetryDataset:
    day = _day_dir(src)
    quirks = QuirkLog()
    maps = metric_maps(mapping)
    front_maps = metric_maps(mapping, "frontend_metrics")
    ts_cfg = mapping.get("timestamp", {"column": "Time"})
    check_col = mapping.get("check_timestamp_column", "TimeStamp")
    ent_cfg = mapping.get("entity", {"column": "PodName"})
    strip = re.compile(ent_cfg.get("strip_suffix", r"$^"))
    files = sorted(day.glob(mapping.get("pod_files", "metric/*_metric.csv")))
    if not files:
        raise ImportFailed("no pod metric files found", file=str(day / "metric"),
                           expected=mapping.get("pod_files", "metric/*_metric.csv"))
    parts, used = [], []
    pod_to_service: dict[str, str] = {}
    for path in files:
        df = pd.read_csv(path, dtype=str)
        fname = str(path)
        require_columns(list(df.columns), [ts_cfg["column"], ent_cfg["column"],
                                           *(m.column for m in maps if m.column)], file=fname)
        ts = _parse_time(df[ts_cfg["column"]], fname, ts_cfg)
        pod = str(df[ent_cfg["column"]].iloc[0])
        service = strip.sub("", pod)
        pod_to_service[pod] = service
        if check_col in df.columns:
            unix = parse_numeric(df[check_col], file=fname, column=check_col, row_offset=2)
            offset = np.nanmedian(unix - unix_seconds(ts))
            if abs(offset) > 1.0:
                quirks.add("clock_offset",
                           f"{check_col} is {offset:+.0f} s off the {ts_cfg['column']} column; "
                           f"time taken from {ts_cfg['column']}", entity=service, file=path.name,
                           offset_s=float(round(offset)))

        def column(mm: MetricMap, df: pd.DataFrame = df) -> pd.Series:
            return df[mm.column]

        metrics = read_mapped(column, maps, file=path.name, row_offset=2, n_rows=len(df),
                              entity=service, quirks=quirks)
        part = pd.DataFrame(metrics)
        part[TIMESTAMP], part[STAGE] = ts.to_numpy(), service
        parts.append(part)
        used.append(path)
    frame = pd.concat(parts, ignore_index=True)
    frame = _frontend_sli(day, mapping, front_maps, frame, quirks, used, ts_cfg)
    faults = _faults(day, mapping, pod_to_service, quirks, used)
    graph = _call_graph(day, mapping, used)
    system = mapping.get("systems", {}).get(day.name, "unknown")
    return assemble(frame, name=f"nezha-{day.name}", quirks=quirks, source_files=used,
                    root=day, step_seconds=mapping.get("step_seconds"), faults=faults,
                    call_graph=graph,
                    source={"format": "nezha", "path": str(day), "system": system,
                            "mapping": mapping["_path"], "licence": "MIT (IntelligentDDS/Nezha)"},
                    notes=mapping.get("notes", []))


def _frontend_sli(day: Path, mapping: dict[str, Any], maps: list[MetricMap],
                  frame: pd.DataFrame, quirks: QuirkLog, used: list[Path],
                  ts_cfg: dict[str, Any]) -> pd.DataFrame:
    """The frontend SLI file carries the only real error-rate signal (OnlineBoutique)."""
    path = day / mapping.get("frontend_file", "metric/front_service.csv")
    entity = mapping.get("frontend_entity", "frontend")
    if not path.is_file() or not maps:
        return frame
    df = pd.read_csv(path, dtype=str)
    require_columns(list(df.columns), [ts_cfg["column"], *(m.column for m in maps if m.column)],
                    file=str(path))
    used.append(path)
    ts = _parse_time(df[ts_cfg["column"]], str(path), ts_cfg)

    def column(mm: MetricMap) -> pd.Series:
        return df[mm.column]

    sli = read_mapped(column, maps, file=str(path), row_offset=2, n_rows=len(df),
                      entity=entity, quirks=quirks)
    minute = (unix_seconds(ts) // 60).astype(np.int64)
    sel = frame[STAGE] == entity
    if not sel.any():
        quirks.add("frontend_missing", f"no {entity} pod file; the SLI file was not used",
                   file=str(path))
        return frame
    fmin = (unix_seconds(frame.loc[sel, TIMESTAMP]) // 60).astype(np.int64)
    for metric, values in sli.items():
        if np.isnan(values).all():
            continue
        lookup = pd.Series(values, index=minute).groupby(level=0).first()
        frame.loc[sel, metric] = lookup.reindex(fmin).to_numpy()
        quirks.add("frontend_sli", f"{metric} of {entity} taken from {path.name}",
                   entity=entity, column=metric)
    return frame


def _faults(day: Path, mapping: dict[str, Any], pod_to_service: dict[str, str],
            quirks: QuirkLog, used: list[Path]) -> pd.DataFrame:
    path = day / mapping.get("fault_list", "{day}-fault_list.json").format(day=day.name)
    if not path.is_file():
        quirks.add("no_fault_labels", f"{path.name} not found; no fault windows", file=str(path))
        return fault_frame([])
    used.append(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ImportFailed(f"fault list is not valid JSON ({exc.msg})", file=str(path),
                           row=exc.lineno) from exc
    types = mapping.get("fault_types", {})
    duration = float(mapping.get("fault_duration_s", 180))
    rows, offsets = [], []
    for _hour, items in sorted(data.items()):
        for item in items:
            try:
                start = pd.Timestamp(item["inject_time"], tz="UTC")
            except (KeyError, ValueError) as exc:
                raise ImportFailed("fault entry without a parsable inject_time", file=str(path),
                                   column="inject_time", value=item.get("inject_time"),
                                   expected="'YYYY-MM-DD HH:MM:SS'") from exc
            if "inject_timestamp" in item:
                offsets.append(float(item["inject_timestamp"]) - start.timestamp())
            pod = item.get("inject_pod", "")
            service = pod_to_service.get(pod) or re.sub(
                mapping.get("entity", {}).get("strip_suffix", r"$^"), "", pod)
            label = item.get("inject_type")
            rows.append({"start": start, "end": start + pd.Timedelta(seconds=duration),
                         "entity": service, "fault_type": types.get(label),
                         "source_label": label})
    off = np.array(offsets)
    if off.size and np.any(np.abs(off) > 1):
        bad = off[np.abs(off) > 1]
        seen = sorted({float(round(o)) for o in bad})
        quirks.add("clock_offset",
                   f"{bad.size} of {off.size} inject_timestamp values are off inject_time (by "
                   f"{seen[:5]} s); windows use inject_time, the metrics' clock",
                   file=path.name, count=int(bad.size))
    unmapped = sorted({r["source_label"] for r in rows if r["fault_type"] is None})
    if unmapped:
        quirks.add("unmapped_fault_labels", f"labels {unmapped} have no healgym fault type",
                   file=str(path))
    return fault_frame(rows)


def _call_graph(day: Path, mapping: dict[str, Any], used: list[Path]) -> list[tuple[str, str]]:
    path = day / mapping.get("call_graph_file", "metric/dependency.csv")
    if not path.is_file():
        return []
    df = pd.read_csv(path)
    require_columns(list(df.columns), ["Source", "Target"], file=str(path))
    used.append(path)
    return [(str(a), str(b)) for a, b in zip(df["Source"], df["Target"], strict=True)]
