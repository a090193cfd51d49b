"""The canonical dataset format and the synthetic generator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from healgym.errors import TelemetryFormatError
from healgym.telemetry import FORMAT_VERSION, generate_synthetic, load_dataset
from healgym.telemetry.schema import CANONICAL_METRICS


def test_synthetic_is_seeded_and_marked():
    a, b, c = generate_synthetic(seed=1, days=1), generate_synthetic(seed=1, days=1), \
        generate_synthetic(seed=2, days=1)
    assert a.frame.equals(b.frame)
    assert not a.frame.equals(c.frame)
    assert a.synthetic and a.metadata["source"]["seed"] == 1
    assert a.stages == ["ingest", "features", "train", "serve", "deliver"]
    assert len(a.frame) == 1440 * 5


def test_synthetic_has_a_daily_cycle_and_metrics_that_move_together():
    ds = generate_synthetic(seed=0, days=3)
    serve = ds.frame[ds.frame.stage == "serve"]
    hour = serve.timestamp.dt.hour
    by_hour = serve.groupby(hour).throughput_rps.mean()
    assert by_hour.max() > 1.8 * by_hour.min()  # busy afternoons, quiet nights
    assert by_hour.idxmax() in range(12, 19) and by_hour.idxmin() in range(0, 7)
    corr = serve[["throughput_rps", "cpu_pct", "latency_p95_ms", "queue_depth"]].corr()
    assert corr.loc["throughput_rps", "cpu_pct"] > 0.6
    assert corr.loc["throughput_rps", "latency_p95_ms"] > 0.4
    # noise with memory: lag-1 autocorrelation of the latency residual is far from 0
    lat = np.log(serve.latency_p95_ms.to_numpy())
    resid = lat - np.convolve(lat, np.ones(61) / 61, mode="same")
    r = np.corrcoef(resid[31:-31][:-1], resid[31:-31][1:])[0, 1]
    assert r > 0.3
    # Little's law holds by construction
    littles = serve.throughput_rps * serve.latency_p95_ms / 1000
    np.testing.assert_allclose(serve.queue_depth, littles)


def test_save_load_round_trip(tmp_path):
    ds = generate_synthetic(seed=3, days=0.5)
    ds.save(tmp_path / "d")
    back = load_dataset(tmp_path / "d")
    assert back.frame.reset_index(drop=True).equals(
        ds.frame.sort_values(["timestamp", "stage"], kind="stable").reset_index(drop=True))
    meta = json.loads((tmp_path / "d" / "metadata.json").read_text())
    assert meta["format"] == "healgym-telemetry" and meta["format_version"] == FORMAT_VERSION
    assert meta["synthetic"] is True and meta["rows"] == len(ds.frame)
    assert meta["metrics"] == list(CANONICAL_METRICS)
    times, values = back.to_array()
    assert values.shape == (720, 5, 6) and not np.isnan(values).any()


def test_unknown_format_version_is_refused(tmp_path):
    generate_synthetic(seed=0, days=0.1).save(tmp_path / "d")
    meta_path = tmp_path / "d" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(TelemetryFormatError, match="format_version 99 is not supported"):
        load_dataset(tmp_path / "d")


def test_not_a_dataset_folder(tmp_path):
    with pytest.raises(TelemetryFormatError, match="healgym import"):
        load_dataset(tmp_path)
    (tmp_path / "metadata.json").write_text("{oops")
    with pytest.raises(TelemetryFormatError, match="not valid JSON"):
        load_dataset(tmp_path)
