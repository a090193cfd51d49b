"""`healgym calibrate`: fault signatures fitted from labelled incidents recover a known effect,
the env takes them in place of the built-in ones, and bad files fail clearly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from healgym.cli import main as cli
from healgym.errors import ConfigError
from healgym.telemetry import generate_synthetic
from healgym.telemetry.calibrate import calibrate, comparison_table, load, write
from healgym.telemetry.dataset import TelemetryDataset


def injected(n_windows: int = 5, cpu_add: float = 30.0, lat_mult: float = 2.0,
             spread: float = 0.5) -> TelemetryDataset:
    """Synthetic telemetry with a known fault laid on 'serve' in ``n_windows`` labelled
    10-minute windows (CPU + ``cpu_add``, latency x (1 + ``lat_mult``)), and ``spread`` of the
    CPU effect on its call-graph neighbour 'deliver'."""
    ds = generate_synthetic(seed=3, days=1.0)
    f = ds.frame.copy()
    t0 = f.timestamp.min()
    rows = []
    for w in range(n_windows):
        start = t0 + pd.Timedelta(hours=2 + 3 * w)
        end = start + pd.Timedelta(minutes=10)
        inside = (f.timestamp >= start) & (f.timestamp <= end)
        on = inside & (f.stage == "serve")
        f.loc[on, "cpu_pct"] += cpu_add
        f.loc[on, "latency_p95_ms"] *= 1.0 + lat_mult
        f.loc[inside & (f.stage == "deliver"), "cpu_pct"] += spread * cpu_add
        rows.append({"start": start, "end": end, "entity": "serve",
                     "fault_type": "cpu_contention", "source_label": "test"})
    faults = pd.DataFrame(rows)
    meta = {**ds.metadata, "call_graph": [["serve", "deliver"]]}
    return TelemetryDataset(frame=f, metadata=meta, faults=faults)


def test_a_known_signature_is_recovered_with_its_interval():
    r = calibrate(injected())
    fit = r["faults"]["cpu_contention"]
    assert fit["windows"] == 5 and fit["entities"] == ["serve"]
    assert fit["add"]["cpu_pct"] == pytest.approx(30.0, abs=3.0)
    assert fit["mult"]["latency_p95_ms"] == pytest.approx(2.0, rel=0.15)
    lo, hi = fit["effects"]["cpu_pct"]["ci95"]
    assert lo <= fit["add"]["cpu_pct"] <= hi and lo > 0
    assert "error_rate" not in fit["add"] and not fit["effects"]["error_rate"]["moves"]
    assert fit["ramp_s"] == 0.0 and fit["observed_duration_s"] == 600.0
    assert fit["propagate"] == pytest.approx(0.5, abs=0.15)
    assert r["not_fitted"] == {}
    assert "| cpu_contention | 5 |" in comparison_table(r)


def test_too_few_windows_are_reported_not_fitted():
    r = calibrate(injected(n_windows=2))
    assert r["faults"] == {} and "2 usable window(s)" in r["not_fitted"]["cpu_contention"]


def test_the_env_takes_the_fitted_signatures_in_place_of_the_built_in_ones(tmp_path):
    import gymnasium as gym

    import healgym
    from healgym.envs.consts import kernel_consts
    from healgym.sim.faults import SPEC_INDEX, M

    path = write(calibrate(injected()), tmp_path / "faults.yaml")
    fitted = gym.make(healgym.ENV_ID, faults=str(path)).unwrapped.model
    plain = gym.make(healgym.ENV_ID).unwrapped.model
    cpu, other = SPEC_INDEX["cpu_contention"], SPEC_INDEX["memory_leak"]
    tf, tp = kernel_consts(fitted), kernel_consts(plain)
    spec = fitted.fault_specs[cpu]
    assert spec.add["cpu_pct"] == pytest.approx(load(path)["faults"]["cpu_contention"]["add"][
        "cpu_pct"]) and spec.add != plain.fault_specs[cpu].add
    assert fitted.fault_specs[other] == plain.fault_specs[other]  # uncovered: built-in
    assert tf.t_add[cpu, M["cpu_pct"]] == pytest.approx(spec.add["cpu_pct"])  # what the kernel uses
    assert np.array_equal(tf.t_add[other], tp.t_add[other])
    assert np.array_equal(tf.t_mult[other], tp.t_mult[other])
    # and the dynamics follow: the same episode with a scripted cpu_contention differs
    scen = {"name": "c", "faults": [{"at": 30, "fault": "cpu_contention", "stage": "serve"}]}
    runs = []
    for kw in ({"faults": str(path)}, {}):
        env = gym.make(healgym.ENV_ID, scenario=scen, chaos=False, scrape_gap_p=0.0,
                       metric_lag_s=0.0, **kw)
        obs, _ = env.reset(seed=1)
        for _ in range(10):
            obs, *_ = env.step(0)
        runs.append(obs)
    assert not np.array_equal(runs[0], runs[1])


@pytest.mark.parametrize("text, says", [
    ("format: other\n", "not a fitted-signature file"),
    ("format: healgym-fault-signatures\nfaults:\n  cpu_contension: {add: {cpu_pct: 3}}\n",
     'Did you mean "cpu_contention"'),
    ("format: healgym-fault-signatures\nfaults:\n  cpu_contention: {add: {latency_p95_ms: 3}}\n",
     "add takes"),
    ("format: healgym-fault-signatures\nfaults:\n  cpu_contention: {add: {cpu_pct: x}}\n",
     "a number"),
])
def test_a_bad_signature_file_fails_clearly(tmp_path, text, says):
    import gymnasium as gym

    import healgym

    (tmp_path / "f.yaml").write_text(text)
    with pytest.raises(ConfigError, match=says):
        gym.make(healgym.ENV_ID, faults=str(tmp_path / "f.yaml"))
    with pytest.raises(ConfigError, match="no such file"):
        gym.make(healgym.ENV_ID, faults=str(tmp_path / "missing.yaml"))


def test_calibrate_through_the_cli_and_hydra(tmp_path, capsys):
    injected().save(tmp_path / "ds")
    assert cli(["calibrate", str(tmp_path / "ds"), "--out", str(tmp_path / "f.yaml")]) == 0
    out = capsys.readouterr().out
    assert "fitted 1 fault type(s) from 5 labelled windows" in out and "cpu_contention" in out
    from hydra import compose, initialize_config_dir

    from agents.config import env_kwargs, register
    from tests.test_experiments import ROOT

    register()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"env.faults={tmp_path / 'f.yaml'}"])
    assert env_kwargs(cfg)["faults"] == str(tmp_path / "f.yaml")


@pytest.mark.realdata
def test_real_incidents_calibrate_to_finite_signatures_in_the_expected_direction(shared_data):
    from healgym.telemetry.importers import import_source

    ob = calibrate(import_source("nezha", shared_data / "nezha/rca_data/2022-08-22"))
    fit = ob["faults"]["cpu_contention"]
    assert fit["windows"] >= 10 and fit["add"]["cpu_pct"] > 10  # a CPU injection raises CPU
    assert all(np.isfinite(v) for d in (fit["mult"], fit["add"]) for v in d.values())
    assert 0.0 <= fit["propagate"] <= 1.0
    pet = calibrate(import_source("petshop", shared_data / "petshop/dataset/low_traffic"))
    assert pet["faults"]["network_delay"]["mult"]["latency_p95_ms"] > 0  # a delay slows it
    nab = calibrate(import_source("nab", shared_data / "nab"))
    assert nab["faults"] == {} and nab["source"]["untyped_windows"] == nab["source"]["windows"]
