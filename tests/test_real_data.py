"""Importers and replay on the real third-party telemetry in ../shared/data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from healgym.telemetry import load_dataset
from healgym.telemetry.importers import import_source
from tests.helpers import quiet_env, run_actions

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def nezha_ob(shared_data):
    return import_source("nezha", shared_data / "nezha/rca_data/2022-08-22")


@pytest.fixture(scope="module")
def nezha_tt(shared_data):
    return import_source("nezha", shared_data / "nezha/rca_data/2023-01-29")


def quirks(ds, kind):
    return [q for q in ds.metadata["quirks"] if q["kind"] == kind]


def test_nezha_online_boutique_rows_faults_and_quirks(nezha_ob, shared_data):
    ds = nezha_ob
    assert len(ds.stages) == 10 and len(ds.frame) == 10 * 1209
    assert ds.frame.groupby("stage").size().eq(1209).all()
    # fault windows match the reference table, start for start, and type for type
    ref = pd.read_csv(shared_data / "nezha/fault_windows.csv")
    ref = ref[ref.date == "2022-08-22"]
    got = ds.faults.sort_values("start")
    assert len(got) == len(ref) == 24
    assert (pd.to_datetime(ref.start_ts, unit="s", utc=True).to_numpy()
            == got.start.to_numpy()).all()
    assert list(got.entity) == list(ref.service)
    assert list(got.source_label) == list(ref.fault_type)
    assert (got.end - got.start).dt.total_seconds().eq(180).all()
    # quirks: the adservice clock offset, the all-zero success rate, NaN minutes
    off = quirks(ds, "clock_offset")
    assert any(q.get("entity") == "adservice" and q["offset_s"] == 200000000 for q in off)
    zero = quirks(ds, "constant_zero_column")
    assert {q["entity"] for q in zero} >= {"adservice", "frontend"}
    assert ds.frame[ds.frame.stage == "adservice"].error_rate.isna().all()
    # the only real error-rate signal: the frontend SLI, which drops during return faults
    fe = ds.frame[ds.frame.stage == "frontend"].set_index("timestamp").error_rate
    assert fe.notna().mean() > 0.95
    ret = got[(got.source_label == "return") & (got.entity == "frontend")].iloc[0]
    during = fe[(fe.index >= ret.start) & (fe.index <= ret.end)].max()
    assert during > 0.05 > fe.median()
    assert ds.call_graph and ("frontend", "checkoutservice") in ds.call_graph
    assert ds.metadata["derived"][0]["metric"] == "queue_depth"
    assert ds.step_seconds == 60


def test_nezha_train_ticket_fault_list_clock_and_nans(nezha_tt, shared_data):
    ds = nezha_tt
    assert len(ds.stages) == 46 and len(ds.faults) == 28
    off = [q for q in quirks(ds, "clock_offset") if "inject_timestamp" in q["detail"]]
    assert off and off[0]["count"] >= 20
    ref = pd.read_csv(shared_data / "nezha/fault_windows.csv")
    ref = ref[ref.date == "2023-01-29"]
    assert sorted(pd.to_datetime(ref.start_ts, unit="s", utc=True)) == sorted(ds.faults.start)
    nan = quirks(ds, "nan_cells")
    assert any(q["column"] == "latency_p95_ms" for q in nan)


def test_petshop_issues_become_typed_fault_windows(shared_data):
    ds = import_source("petshop", shared_data / "petshop/dataset/low_traffic")
    index = pd.read_csv(shared_data / "petshop/issues_index.csv")
    index = index[index.scenario == "low_traffic"]
    assert len(ds.faults) == len(index)
    family = {"latency_injection": "network_delay", "error_injection": "error_spike",
              "request_overload": "request_surge"}
    got = ds.faults.set_index("start").sort_index()
    want = index.assign(start=pd.to_datetime(index.target_timestamp, unit="s", utc=True))
    want = want.set_index("start").sort_index()
    assert list(got.entity) == list(want.root_cause_node)
    assert list(got.fault_type) == [family[f] for f in want.fault_family]
    assert ds.step_seconds == 300 and len(ds.stages) >= 40
    absent = quirks(ds, "metric_absent")
    assert {q["column"] for q in absent} >= {"cpu_pct", "memory_pct"}
    assert quirks(ds, "gaps")  # issue windows lie months from the normal-operation period
    assert ds.metadata["derived"][0]["note"].count("latency_mean_ms")


@pytest.mark.parametrize("scenario", ["low_traffic", "temporal_traffic1"])
def test_petshop_availability_that_never_worked_is_not_an_outage(shared_data, scenario):
    """PetShop components whose availability is 0 in every row would replay as a permanent
    100 % error rate (every episode an outage, whatever the policy): reported, not replayed."""
    ds = import_source("petshop", shared_data / f"petshop/dataset/{scenario}")
    dead = {q["entity"] for q in quirks(ds, "constant_impossible")}
    assert "servi-petsi.us-west-2.elb.amazonaws.com_remote" in dead and len(dead) == 4
    per = ds.frame.groupby("stage").error_rate
    assert not (per.min() == 1.0).any()  # no entity fails every request in every row
    assert set(ds.metadata["unmeasured"]["error_rate"]) >= dead


def test_real_out_of_range_values_are_reported_where_they_are(nezha_ob):
    """Nezha's adservice reports 148 % memory in one row: a quirk with its file, column and
    row, and that value is not replayed."""
    q = [x for x in quirks(nezha_ob, "out_of_range") if x["column"] == "MemoryUsageRate(%)"]
    assert [x["entity"] for x in q] == ["adservice"] and "148" in q[0]["detail"]
    assert q[0]["file"].endswith("_metric.csv") and q[0]["rows"]
    assert nezha_ob.frame.memory_pct.max() <= 100 and nezha_ob.frame.cpu_pct.max() <= 100


def test_petshop_scenario_without_normal_period(shared_data):
    ds = import_source("petshop", shared_data / "petshop/dataset/temporal_traffic1")
    assert quirks(ds, "missing_file")
    assert len(ds.faults) > 0


def test_nab_windows_and_skipped_files(shared_data):
    ds = import_source("nab", shared_data / "nab")
    windows = json.loads((shared_data / "nab/labels/combined_windows.json").read_text())
    expected = sum(len(v) for k, v in windows.items()
                   if k.split("/")[-1].removesuffix(".csv") in ds.stages)
    assert len(ds.faults) == expected > 0
    assert ds.faults.fault_type.isna().all()
    assert quirks(ds, "skipped_files") and quirks(ds, "disjoint_spans")
    cpu = ds.frame[ds.frame.stage == "ec2_cpu_utilization_24ae8d"]
    assert len(cpu) == 4032 and cpu.cpu_pct.notna().all()


def test_replay_real_data_with_chaos_and_replayed_incidents(nezha_ob, tmp_path):
    nezha_ob.save(tmp_path / "ob")
    ds = load_dataset(tmp_path / "ob")
    stages = {"frontend": "frontend", "checkout": "checkoutservice", "cart": "cartservice"}
    env = quiet_env(dataset=ds, stages=stages, chaos=True, episode_steps=360)
    res = run_actions(env, 0)
    assert all(np.isfinite(o).all() for o, _, _ in res)
    assert env.replay.report["absent_metrics"]  # error_rate of non-frontend pods
    env = quiet_env(dataset=ds, stages=stages, replay_incidents=True, episode_steps=120)
    m = run_actions(env, 1)[-1][2]["episode_metrics"]
    assert m["n_incidents"] == 1 and m["incidents"][0]["source"] == "replay"
    assert m["incidents"][0]["stage"] in stages


def test_replayed_incident_is_healed_by_the_matrix_and_spliced(nezha_ob):
    stages = ["frontend", "checkoutservice", "cartservice"]
    heal = {"restart": 1.0}
    env = quiet_env(dataset=nezha_ob, stages=stages, replay_incidents=True, episode_steps=120,
                    healing_matrix={f: heal for f in ("cpu_contention", "error_spike",
                                                      "network_delay", "unknown")})

    def stage_raw(actions: dict[int, int], steps: int) -> dict[int, np.ndarray]:
        env.reset(seed=0)
        out = {}
        for j in range(steps):
            env.step(actions.get(j, 0))
            out[round(env.time_s / env.dt)] = env._raw[stage].copy()
        return out

    env.reset(seed=0)
    inc = env.episode_metrics()["incidents"][0]
    stage = env.stages.index(inc["stage"])
    onset_k = round(inc["onset_s"] / env.dt)
    # without action, the historical fault ends when its labelled window ends
    untouched = stage_raw({}, 120)
    m = env.episode_metrics()["incidents"][0]
    assert m["resolved_by"] == "natural" and m["mttr_s"] == pytest.approx(180.0, abs=60)
    end_k = round(m["resolved_s"] / env.dt)
    healed = stage_raw({onset_k: env.action_names.index(f"restart_{inc['stage']}")}, 120)
    m = env.episode_metrics()["incidents"][0]
    assert m["resolved_by"] == f"restart_{inc['stage']}"
    assert m["mttr_s"] == 30.0
    healed_k = onset_k + 3
    # the rest of the fault window is replaced by the healthy data just before the onset
    assert any(not np.array_equal(healed[k], untouched[k]) for k in range(healed_k, end_k))
    for k in range(end_k, 121):
        np.testing.assert_array_equal(healed[k], untouched[k])


# ---------------------------------------------------------------- malformed real-format inputs
def copy_tree(src, dst, files):
    import shutil

    for rel in files:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / rel, dst / rel)


def test_nezha_malformed_inputs_name_file_row_and_column(shared_data, tmp_path):
    from healgym.errors import ImportFailed

    day = shared_data / "nezha/rca_data/2022-08-22"
    pod = "metric/frontend-579b9bff58-t2dbm_metric.csv"
    copy_tree(day, tmp_path / "d", [pod, "2022-08-22-fault_list.json"])
    path = tmp_path / "d" / pod
    lines = path.read_text().splitlines()
    # a wrong type: a text cell in a metric column, on line 6
    cells = lines[5].split(",")
    cells[4] = "n/a-ish"
    bad = lines[:5] + [",".join(cells)] + lines[6:]
    path.write_text("\n".join(bad) + "\n")
    with pytest.raises(ImportFailed) as err:
        import_source("nezha", tmp_path / "d")
    assert (err.value.row, err.value.column, err.value.value) == (6, "CpuUsageRate(%)", "n/a-ish")
    assert "frontend" in err.value.file
    # an unparsable timestamp on line 3
    cells = lines[2].split(",")
    cells[0] = "yesterday at noon"
    path.write_text("\n".join(lines[:2] + [",".join(cells)] + lines[3:]) + "\n")
    with pytest.raises(ImportFailed) as err:
        import_source("nezha", tmp_path / "d")
    assert (err.value.row, err.value.column) == (3, "Time")
    # a missing column
    header = lines[0].replace("MemoryUsageRate(%)", "MemRate")
    path.write_text("\n".join([header] + lines[1:]) + "\n")
    with pytest.raises(ImportFailed, match="MemoryUsageRate"):
        import_source("nezha", tmp_path / "d")
    # the dataset root instead of a day folder: the error lists the day folders
    with pytest.raises(ImportFailed, match="2022-08-22"):
        import_source("nezha", shared_data / "nezha")


def test_petshop_malformed_inputs(shared_data, tmp_path):
    from healgym.errors import ImportFailed

    scen = shared_data / "petshop/dataset/temporal_traffic1"
    copy_tree(scen, tmp_path / "s", ["test/issue_0/metrics.csv", "test/issue_0/target.json"])
    mfile = tmp_path / "s/test/issue_0/metrics.csv"
    lines = mfile.read_text().splitlines()
    cells = lines[5].split(",")
    cells[0] = "not-a-time"
    mfile.write_text("\n".join(lines[:5] + [",".join(cells)] + lines[6:]) + "\n")
    with pytest.raises(ImportFailed) as err:
        import_source("petshop", tmp_path / "s")
    assert err.value.row == 6 and "unix time" in str(err.value)
    mfile.write_text("\n".join(lines) + "\n")
    (tmp_path / "s/test/issue_0/target.json").write_text('{"target": {}}')
    with pytest.raises(ImportFailed, match="target.json"):
        import_source("petshop", tmp_path / "s")
    with pytest.raises(ImportFailed, match="low_traffic"):
        import_source("petshop", shared_data / "petshop")


def test_nab_malformed_inputs(shared_data, tmp_path):
    from healgym.errors import ImportFailed

    rel = "data/realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv"
    copy_tree(shared_data / "nab", tmp_path / "n", [rel])
    path = tmp_path / "n" / rel
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:10] + ["2014-02-14 15:20:00,lots"] + lines[11:]) + "\n")
    with pytest.raises(ImportFailed) as err:
        import_source("nab", tmp_path / "n")
    assert (err.value.row, err.value.column, err.value.value) == (11, "value", "lots")
    path.write_text("time,value\n1,2\n")
    with pytest.raises(ImportFailed, match="timestamp"):
        import_source("nab", tmp_path / "n")


def test_pipeline_from_an_imported_call_graph(nezha_ob):
    env = quiet_env(dataset=nezha_ob, stages="call_graph")
    graph = set(nezha_ob.call_graph)
    assert len(env.stages) >= 3 and env.stages[0] == "frontend"
    assert all((a, b) in graph for a, b in zip(env.stages[:-1], env.stages[1:], strict=False))
    assert env.hops[0, 1] == 1 and env.hops[1, 0] == -1
    run_actions(env, 0, steps=30)


def test_nab_claims_no_derivation_it_could_not_make(shared_data):
    ds = import_source("nab", shared_data / "nab")
    assert ds.frame.queue_depth.isna().all()  # no NAB file has both throughput and latency
    assert ds.metadata["derived"] == []
