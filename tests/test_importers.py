"""Importers on sample inputs, and malformed inputs that must fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healgym.cli import main as cli
from healgym.errors import ConfigError, ImportFailed
from healgym.telemetry import load_dataset
from healgym.telemetry.importers import import_source

ROOT = Path(__file__).resolve().parents[1]


def write_csv(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


HEADER = "timestamp,stage,latency_p95_ms,error_rate,cpu_pct,memory_pct,throughput_rps,queue_depth"


def test_canonical_round_trip_from_generated_csv(tmp_path):
    assert cli(["generate", "--out", str(tmp_path / "raw"), "--days", "0.5", "--seed", "5"]) == 0
    assert cli(["import", "canonical", str(tmp_path / "raw"), "--out", str(tmp_path / "ds")]) == 0
    ds = load_dataset(tmp_path / "ds")
    assert ds.synthetic  # the generator's sidecar is carried through
    assert ds.stages == ["ingest", "features", "train", "serve", "deliver"]
    assert ds.step_seconds == 60 and len(ds.frame) == 720 * 5
    assert ds.metadata["source_files"][0]["sha256"]
    from healgym.telemetry import generate_synthetic

    orig = generate_synthetic(seed=5, days=0.5).frame
    got = ds.frame.set_index(["timestamp", "stage"]).sort_index()
    want = orig.set_index(["timestamp", "stage"]).sort_index()
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-5)  # CSV keeps 6 digits


def test_canonical_reports_gaps_duplicates_nans_and_derives_queue_depth(tmp_path):
    rows = [HEADER.replace(",queue_depth", "")]
    for i in range(12):
        if i == 4:
            continue  # a gap
        lat = "" if i == 6 else "100"  # a NaN minute
        rows.append(f"2026-01-01T00:{i:02d}:00Z,api,{lat},0.01,20,30,50")
    rows.append("2026-01-01T00:01:00Z,api,999,0.01,20,30,50")  # a duplicate
    write_csv(tmp_path / "src" / "t.csv", rows)
    fmt = tmp_path / "m.yaml"
    fmt.write_text((ROOT / "configs/importers/canonical.yaml").read_text().replace(
        "  queue_depth: {column: queue_depth}\n", ""))
    ds = import_source(str(fmt), tmp_path / "src")
    kinds = {q["kind"] for q in ds.metadata["quirks"]}
    assert {"gaps", "duplicate_rows", "nan_cells"} <= kinds
    gap = next(q for q in ds.metadata["quirks"] if q["kind"] == "gaps")
    assert gap["count"] == 1
    assert len(ds.frame) == 11  # duplicate dropped, the first kept; the gap not filled
    assert ds.frame.latency_p95_ms.iloc[1] == 100.0
    assert np.isnan(ds.frame.set_index("timestamp").latency_p95_ms.iloc[5])  # not invented
    assert ds.metadata["derived"][0]["method"] == "littles_law"
    assert ds.frame.queue_depth.iloc[0] == pytest.approx(50 * 100 / 1000)


def test_prometheus_long_export_needs_only_yaml(tmp_path):
    rows = ["timestamp,job,__name__,value"]
    for i in range(10):
        t = 1_700_000_000 + 60 * i
        rows += [f"{t},serve,job:request_latency_seconds:p95,0.08",
                 f"{t},serve,job:request_errors:ratio_rate5m,0.002",
                 f"{t},serve,job:cpu_usage:ratio,0.4",
                 f"{t},serve,job:memory_working_set:ratio,0.5",
                 f"{t},serve,job:requests:rate5m,120"]
    write_csv(tmp_path / "prom" / "export.csv", rows)
    ds = import_source("prometheus", tmp_path / "prom")
    row = ds.frame.iloc[0]
    assert row.latency_p95_ms == pytest.approx(80.0) and row.cpu_pct == pytest.approx(40.0)
    assert row.queue_depth == pytest.approx(120 * 0.08)
    assert ds.step_seconds == 60


def test_a_file_without_any_metric_column_names_file_and_columns(tmp_path):
    f = write_csv(tmp_path / "s" / "t.csv", ["timestamp,stage,latency_ms",
                                             "2026-01-01T00:00:00Z,a,1"])
    with pytest.raises(ImportFailed) as err:
        import_source("canonical", tmp_path / "s")
    msg = str(err.value)
    assert str(f) in msg and "error_rate" in msg and "row 1" in msg and "fix:" in msg
    assert "latency_ms" in msg  # what the file has


def test_any_subset_of_the_canonical_metrics_imports_the_rest_unmeasured(tmp_path):
    rows = ["timestamp,stage,latency_p95_ms,error_rate,throughput_rps"] + [
        f"2026-01-01T00:{i:02d}:00Z,a,80,0.01,50" for i in range(12)]
    write_csv(tmp_path / "s" / "t.csv", rows)
    ds = import_source("canonical", tmp_path / "s")
    assert ds.frame.latency_p95_ms.eq(80).all() and ds.frame.cpu_pct.isna().all()
    assert ds.metadata["unmeasured"] == {"cpu_pct": ["a"], "memory_pct": ["a"]}
    q = next(q for q in ds.metadata["quirks"] if q["kind"] == "metric_columns_absent")
    assert "cpu_pct" in q["detail"] and "memory_pct" in q["detail"]
    ds.save(tmp_path / "ds")  # and it replays: the unmeasured metrics at their neutral value
    import gymnasium as gym

    import healgym

    env = gym.make(healgym.ENV_ID, dataset=str(tmp_path / "ds"), stages=["a"])
    obs, _ = env.reset(seed=0)
    assert np.isfinite(obs).all()


def test_a_dataset_too_short_to_replay_fails_at_import_saying_what_it_needs(tmp_path):
    rows = [HEADER] + [f"2026-01-01T00:0{i}:00Z,a,1,0,1,1,1,1" for i in range(3)]
    write_csv(tmp_path / "s" / "t.csv", rows)
    with pytest.raises(ImportFailed, match=r"too short to replay: 3 time step.*at least 10 rows"):
        import_source("canonical", tmp_path / "s")


def test_out_of_range_values_are_quirks_with_file_row_column_and_not_replayed(tmp_path):
    rows = [HEADER] + [f"2026-01-01T00:{i:02d}:00Z,a,100,0.01,20,40,50,5" for i in range(12)]
    rows[3] = "2026-01-01T00:02:00Z,a,inf,0.01,20,40,50,5"
    rows[4] = "2026-01-01T00:03:00Z,a,1e308,7,20,130,50,5"
    rows[6] = "2026-01-01T00:05:00Z,a,100,0.01,-3,40,50,5"
    f = write_csv(tmp_path / "s" / "t.csv", rows)
    ds = import_source("canonical", tmp_path / "s")
    q = {x["column"]: x for x in ds.metadata["quirks"] if x["kind"] == "out_of_range"}
    assert set(q) == {"latency_p95_ms", "error_rate", "memory_pct", "cpu_pct"}
    assert q["latency_p95_ms"]["rows"] == [4, 5] and q["latency_p95_ms"]["file"] == str(f)
    assert q["error_rate"]["rows"] == [5] and q["memory_pct"]["rows"] == [5]
    assert q["cpu_pct"]["rows"] == [7] and "-3" in q["cpu_pct"]["detail"]
    fr = ds.frame.set_index("timestamp")
    assert fr.latency_p95_ms.isna().sum() == 2 and fr.error_rate.isna().sum() == 1
    assert fr.memory_pct.isna().sum() == 1 and fr.cpu_pct.isna().sum() == 1
    assert fr.latency_p95_ms.max() == 100 and fr.error_rate.max() <= 1  # nothing else touched


def test_an_error_rate_of_one_in_every_row_is_not_a_measurement(tmp_path):
    rows = [HEADER] + [f"2026-01-01T00:{i:02d}:00Z,{s},100,{1 if s == 'dead' else 0.01},20,40,50,5"
                       for i in range(12) for s in ("dead", "live")]
    write_csv(tmp_path / "s" / "t.csv", rows)
    ds = import_source("canonical", tmp_path / "s")
    fr = ds.frame
    assert fr[fr.stage == "dead"].error_rate.isna().all()
    assert fr[fr.stage == "live"].error_rate.eq(0.01).all()
    q = [x for x in ds.metadata["quirks"] if x["kind"] == "constant_impossible"]
    assert [x["entity"] for x in q] == ["dead"]
    assert ds.metadata["unmeasured"]["error_rate"] == ["dead"]


FAULT_HEADER = "start,end,entity,fault_type"


@pytest.mark.parametrize("row, message, column", [
    ("2026-01-01T00:08:00Z,2026-01-01T00:03:00Z,a,memory_leak", "ends before it starts", "end"),
    ("2026-01-01T00:02:00Z,2026-01-01T00:03:00Z,a,memleak",
     'unknown fault type. Did you mean "memory_leak"', "fault_type"),
    ("2026-01-01T00:02:00Z,2026-01-01T00:03:00Z,api,memory_leak", "entity has no telemetry",
     "entity"),
])
def test_the_fault_table_is_validated_row_by_row(tmp_path, row, message, column):
    rows = [HEADER] + [f"2026-01-01T00:{i:02d}:00Z,a,1,0,1,1,1,1" for i in range(12)]
    write_csv(tmp_path / "s" / "t.csv", rows)
    f = write_csv(tmp_path / "s" / "faults.csv",
                  [FAULT_HEADER, "2026-01-01T00:01:00Z,2026-01-01T00:02:00Z,a,", row])
    with pytest.raises(ImportFailed) as err:
        import_source("canonical", tmp_path / "s")
    assert message in str(err.value) and str(f) in str(err.value) and "fix:" in str(err.value)
    assert err.value.row == 3 and err.value.column == column


def test_unparsable_timestamp_names_row_and_value(tmp_path):
    rows = [HEADER, "2026-01-01T00:00:00Z,a,1,0,1,1,1,1", "2026-01-01T00:01:00Z,a,1,0,1,1,1,1",
            "yesterday,a,1,0,1,1,1,1"]
    f = write_csv(tmp_path / "s" / "t.csv", rows)
    with pytest.raises(ImportFailed) as err:
        import_source("canonical", tmp_path / "s")
    e = err.value
    assert e.file == str(f) and e.row == 4 and e.column == "timestamp" and e.value == "yesterday"
    assert "ISO 8601" in str(e)


def test_wrong_type_names_row_and_column(tmp_path):
    rows = [HEADER, "2026-01-01T00:00:00Z,a,1,0,1,1,1,1", "2026-01-01T00:01:00Z,a,1,0,high,1,1,1"]
    write_csv(tmp_path / "s" / "t.csv", rows)
    with pytest.raises(ImportFailed) as err:
        import_source("canonical", tmp_path / "s")
    assert (err.value.row, err.value.column, err.value.value) == (3, "cpu_pct", "high")
    assert "expected: a number" in str(err.value)


def test_constant_zero_column_kept_unless_marked_missing(tmp_path):
    rows = [HEADER] + [f"2026-01-01T00:{i:02d}:00Z,a,1,0,1,1,1,1" for i in range(10)]
    write_csv(tmp_path / "s" / "t.csv", rows)
    ds = import_source("canonical", tmp_path / "s")
    assert (ds.frame.error_rate == 0).all()
    assert any(q["kind"] == "constant_zero_column" for q in ds.metadata["quirks"])


def test_unknown_format_suggests_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match='Did you mean "nezha"'):
        import_source("nezah", tmp_path)


def test_bad_mapping_key_is_refused(tmp_path):
    fmt = tmp_path / "m.yaml"
    fmt.write_text("reader: table\nmetrics:\n  latency_ms: {column: x}\n")
    with pytest.raises(ConfigError, match='Did you mean "latency_p95_ms"'):
        import_source(str(fmt), tmp_path)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert cli(["import", "canonical", str(tmp_path / "nothing"), "--out",
                str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fault_windows_from_canonical_faults_csv(tmp_path):
    rows = [HEADER] + [f"2026-01-01T00:{i:02d}:00Z,a,1,0,1,1,1,1" for i in range(10)]
    write_csv(tmp_path / "s" / "t.csv", rows)
    write_csv(tmp_path / "s" / "faults.csv", ["start,end,entity,fault_type",
                                              "2026-01-01T00:01:00Z,2026-01-01T00:03:00Z,a,"
                                              "process_crash"])
    ds = import_source("canonical", tmp_path / "s")
    assert len(ds.faults) == 1 and ds.faults.fault_type.iloc[0] == "process_crash"
    assert ds.faults.start.iloc[0] == pd.Timestamp("2026-01-01T00:01:00Z")


def test_canonical_parquet_input(tmp_path):
    from healgym.telemetry import generate_synthetic

    frame = generate_synthetic(seed=2, days=0.1).frame
    (tmp_path / "src").mkdir()
    frame.to_parquet(tmp_path / "src" / "t.parquet", index=False)
    ds = import_source("canonical", tmp_path / "src")
    assert len(ds.frame) == len(frame) and set(ds.stages) == set(frame.stage)
    got = ds.frame.set_index(["timestamp", "stage"]).sort_index()
    want = frame.set_index(["timestamp", "stage"]).sort_index()
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())


def test_info_lists_each_stage_with_its_metrics_and_measured_span(tmp_path, capsys):
    rows = ["timestamp,stage,latency_p95_ms,error_rate"] + [
        f"2026-01-01T00:{i:02d}:00Z,{s},80,0.01" for i in range(12) for s in ("api", "db")
        if not (s == "db" and i < 2)]
    write_csv(tmp_path / "s" / "t.csv", rows)
    assert cli(["import", "canonical", str(tmp_path / "s"), "--out", str(tmp_path / "ds")]) == 0
    capsys.readouterr()
    assert cli(["info", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    api = next(line for line in out.splitlines() if line.strip().startswith("api:"))
    db = next(line for line in out.splitlines() if line.strip().startswith("db:"))
    assert "latency_p95_ms, error_rate" in api and "unmeasured: cpu_pct" in api
    assert "2026-01-01 00:00 .. 2026-01-01 00:11 UTC, 12 rows" in api
    assert "2026-01-01 00:02 .. 2026-01-01 00:11 UTC, 10 rows" in db
