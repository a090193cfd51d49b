"""Reader for the PetShop RCA dataset (Amazon; 5-minute CloudWatch/X-Ray metrics of 41 AWS
components; data CC-BY-4.0, cite Hardt et al. 2023).

SRC is one traffic scenario's folder, e.g. ``petshop/dataset/low_traffic``: its normal-operation
``noissue/metrics.csv`` and every ``{train,test}/issue_N/metrics.csv`` window are read; each
issue's ``target.json`` becomes a fault window on its root-cause component, typed by matching
its injection command against the mapping's ``fault_type_rules``.
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
from healgym.telemetry.mapping import MetricMap, metric_maps, parse_timestamps
from healgym.telemetry.quirks import QuirkLog
from healgym.telemetry.schema import STAGE, TIMESTAMP

HEADER_ROWS = 3  # component / metric / statistic


def _scenario_dir(src: Path) -> Path:
    if any((src / d).is_dir() for d in ("noissue", "train", "test")):
        return src
    found = sorted(p for p in src.glob("**/*") if p.is_dir() and (p / "graph.csv").is_file())
    raise ImportFailed("SRC is not a PetShop scenario folder (no noissue/, train/ or test/)",
                       file=str(src), fix="pass a scenario folder" +
                       (f", one of: {[str(p) for p in found]}" if found else ""))


def _read_metrics(path: Path, maps: list[MetricMap], quirks: QuirkLog) -> pd.DataFrame:
    fname = str(path)
    try:
        df = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ImportFailed(f"cannot read the 3-row header ({exc})", file=fname, row=1,
                           expected="rows microservice / metric / statistic, then data") from exc
    idx = pd.Series(df.index.astype(str), index=df.index)
    keep = (idx != "unix_timestamp").to_numpy()  # the label row after the header
    df, idx = df.loc[keep], idx.loc[keep]
    # Data rows start on line HEADER_ROWS + 2 (the unix_timestamp label row is line 4).
    row_offset = HEADER_ROWS + 2
    ts = parse_timestamps(idx.reset_index(drop=True), file=fname, column="microservice",
                          row_offset=row_offset, unit="s")
    components = sorted({c[0] for c in df.columns})
    parts = []
    for comp in components:
        sub = df[comp]
        available = {(m, s) for m, s in sub.columns}

        def column(mm: MetricMap, sub: pd.DataFrame = sub,
                   available: set = available) -> pd.Series:
            if (mm.metric, mm.statistic) not in available:
                return pd.Series(np.nan, index=sub.index)
            return sub[(mm.metric, mm.statistic)].reset_index(drop=True)

        local = QuirkLog()  # per-file constant columns are judged over the whole entity later
        metrics = read_mapped(column, maps, file=fname, row_offset=row_offset, n_rows=len(sub),
                              entity=comp, quirks=local)
        quirks.items.extend(q for q in local.items if q["kind"] != "constant_zero_column")
        part = pd.DataFrame(metrics)
        part[TIMESTAMP], part[STAGE] = ts.to_numpy(), comp
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def read(mapping: dict[str, Any], src: Path) -> TelemetryDataset:
    scen = _scenario_dir(src)
    quirks = QuirkLog()
    maps = metric_maps(mapping)
    used: list[Path] = []
    frames = []
    noissue = scen / "noissue" / "metrics.csv"
    if noissue.is_file():
        frames.append(_read_metrics(noissue, maps, quirks))
        used.append(noissue)
    else:
        quirks.add("missing_file", "no noissue/metrics.csv (normal operation); only the issue "
                   "windows are imported", file=str(noissue))
    rules = [(re.compile(r["match"]), r["fault_type"]) for r in
             mapping.get("fault_type_rules", [])]
    faults = []
    for issue in sorted(scen.glob("*/issue_*"), key=lambda p: (p.parent.name,
                                                              int(p.name.split("_")[1]))):
        mfile, tfile = issue / "metrics.csv", issue / "target.json"
        if not mfile.is_file():
            quirks.add("missing_file", "issue window without metrics.csv", file=str(issue))
            continue
        part = _read_metrics(mfile, maps, quirks)
        frames.append(part)
        used.append(mfile)
        if tfile.is_file():
            used.append(tfile)
            faults.append(_fault(tfile, part, rules, mapping, issue))
    if not frames:
        raise ImportFailed("no metrics.csv found", file=str(scen))
    frame = pd.concat(frames, ignore_index=True)
    dup = frame.duplicated([TIMESTAMP, STAGE])
    if dup.any():
        quirks.add("overlapping_windows", f"{int(dup.sum())} rows appear in more than one file "
                   "(issue windows overlap); the first is kept")
    unmapped = sorted({f["source_label"] for f in faults if f["fault_type"] is None})
    if unmapped:
        quirks.add("unmapped_fault_labels", f"commands {unmapped} match no fault_type_rules")
    graph = _graph(scen / "graph.csv", used)
    return assemble(frame, name=f"petshop-{scen.name}", quirks=quirks, source_files=used,
                    root=scen, step_seconds=mapping.get("step_seconds"),
                    faults=fault_frame(faults), call_graph=graph,
                    source={"format": "petshop", "path": str(scen), "mapping": mapping["_path"],
                            "licence": "CC-BY-4.0; cite Hardt et al. 2023 (PetShop)"},
                    notes=mapping.get("notes", []))


def _fault(tfile: Path, window: pd.DataFrame, rules: list, mapping: dict[str, Any],
           issue: Path) -> dict[str, Any]:
    try:
        target = json.loads(tfile.read_text())
        ts = pd.Timestamp(int(target["target"]["timestamp"]), unit="s", tz="UTC")
        node = target["root_cause"]["node"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ImportFailed(f"label is not the expected target.json ({exc})", file=str(tfile),
                           expected="{target: {timestamp}, root_cause: {node}}") from exc
    command = (target.get("metadata", {}).get("reproducibility", {}) or {}).get("command", "")
    ftype = next((t for rx, t in rules if rx.search(command or "")), None)
    step = pd.Timedelta(seconds=int(mapping.get("step_seconds", 300)))
    end = window[TIMESTAMP].max() + step
    return {"start": ts, "end": max(end, ts + step), "entity": node, "fault_type": ftype,
            "source_label": f"{issue.parent.name}/{issue.name}: {command[:120]}"}


def _graph(path: Path, used: list[Path]) -> list[tuple[str, str]]:
    if not path.is_file():
        return []
    used.append(path)
    adj = pd.read_csv(path, index_col=0)
    edges = []
    for src_node, row in adj.iterrows():
        for dst, v in row.items():
            if pd.notna(v) and float(v) != 0.0:
                edges.append((str(src_node), str(dst)))
    return edges
