"""Reader for the Numenta Anomaly Benchmark's IT metrics (MIT): single-metric CloudWatch series.

SRC is the NAB root (holding ``data/`` and ``labels/``). Each file is one entity (its file stem);
the metric is chosen by the file name through the mapping's ``metric_rules``; files whose metric
is not canonical are skipped and reported. Anomaly windows become fault windows with no type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from healgym.errors import ConfigError, ImportFailed
from healgym.telemetry.dataset import TelemetryDataset
from healgym.telemetry.importers.common import assemble, fault_frame
from healgym.telemetry.mapping import parse_numeric, parse_timestamps, require_columns
from healgym.telemetry.quirks import QuirkLog
from healgym.telemetry.schema import CANONICAL_METRICS, STAGE, TIMESTAMP


def read(mapping: dict[str, Any], src: Path) -> TelemetryDataset:
    quirks = QuirkLog()
    patterns = mapping.get("files", ["data/realAWSCloudwatch/*.csv"])
    files = sorted({p for pat in patterns for p in src.glob(pat) if p.is_file()})
    if not files:
        raise ImportFailed(f"no NAB data files match {patterns}", file=str(src),
                           fix="pass the NAB root folder (holding data/ and labels/)")
    rules = mapping.get("metric_rules", [])
    for r in rules:
        if r.get("metric") not in CANONICAL_METRICS:
            raise ConfigError(f"{mapping['_path']}: metric_rules entry {r!r}: metric must be one "
                              f"of {list(CANONICAL_METRICS)}")
    parts, used, skipped = [], [], []
    for path in files:
        rule = next((r for r in rules if path.stem.startswith(r["prefix"])), None)
        if rule is None:
            skipped.append(path.stem)
            continue
        df = pd.read_csv(path, dtype=str)
        require_columns(list(df.columns), ["timestamp", "value"], file=str(path))
        ts = parse_timestamps(df["timestamp"], file=str(path), column="timestamp", row_offset=2)
        x = parse_numeric(df["value"], file=str(path), column="value", row_offset=2)
        x = x * float(rule.get("scale", 1.0)) / float(rule.get("divide_by", 1.0))
        part = pd.DataFrame({rule["metric"]: x})
        part[TIMESTAMP], part[STAGE] = ts.to_numpy(), path.stem
        parts.append(part)
        used.append(path)
    if skipped:
        quirks.add("skipped_files", f"no canonical metric for {skipped} (see metric_rules)")
    if not parts:
        raise ImportFailed("no file maps to a canonical metric", file=str(src),
                           fix="add metric_rules to the mapping")
    frame = pd.concat(parts, ignore_index=True)
    entities = {p.stem for p in used}
    faults = []
    labels = src / mapping.get("labels", "labels/combined_windows.json")
    if labels.is_file():
        used.append(labels)
        windows = json.loads(labels.read_text())
        for key, wins in windows.items():
            stem = Path(key).stem
            if stem not in entities:
                continue
            for start, end in wins:
                faults.append({"start": pd.Timestamp(start, tz="UTC"),
                               "end": pd.Timestamp(end, tz="UTC"), "entity": stem,
                               "fault_type": None, "source_label": "NAB anomaly window"})
    spans = frame.groupby(STAGE)[TIMESTAMP].agg(["min", "max"])
    if len(spans) > 1 and spans["min"].max() > spans["max"].min():
        quirks.add("disjoint_spans", "the files cover different periods; replay only entities "
                   "measured over the same span together")
    frame = frame.sort_values([STAGE, TIMESTAMP])
    frame["_dt"] = frame.groupby(STAGE)[TIMESTAMP].diff().dt.total_seconds()
    odd = frame["_dt"].dropna()
    step = int(mapping.get("step_seconds", 300))
    irregular = int((odd != step).sum())
    if irregular:
        quirks.add("irregular_spacing", f"{irregular} consecutive rows are not {step} s apart")
    frame = frame.drop(columns="_dt")
    return assemble(frame, name="nab-" + mapping.get("subset", "aws"), quirks=quirks,
                    source_files=used, root=src, step_seconds=step, faults=fault_frame(faults),
                    source={"format": "nab", "path": str(src), "mapping": mapping["_path"],
                            "licence": "MIT (numenta/NAB)"},
                    notes=mapping.get("notes", []) + [_spans_note(spans)])


def _spans_note(spans: pd.DataFrame) -> str:
    parts = {str(k): [str(v["min"]), str(v["max"])] for k, v in spans.iterrows()}
    return f"entity spans: {parts}"


__all__ = ["read"]
