"""`healgym record` keeps only healthy telemetry for the baseline, says what it left out, and
refuses a recording with too little of it."""

from __future__ import annotations

import json
import logging

import pytest

from healgym.errors import HealgymError
from healgym.serving.config import SourceConf
from healgym.serving.record import record
from healgym.telemetry.dataset import load_dataset

QUERIES = {"latency_p95_ms": 'max(latency_p95_ms{stage="{stage}"}) or on() vector(0)',
           "error_rate": 'max(error_rate{stage="{stage}"}) or on() vector(0)',
           "throughput_rps": 'sum(throughput_rps{stage="{stage}"}) or on() vector(0)',
           "cpu_pct": 'max(cpu_pct{stage="{stage}"})',
           "replicas": 'count(up{stage="{stage}"} == 1)'}


class FakePrometheus:
    """query_range answers from a function of (metric, stage, t); None: no sample."""

    def __init__(self, value, monkeypatch) -> None:
        self.value, self.calls = value, []
        import requests

        monkeypatch.setattr(requests, "get", self.get)

    def get(self, url, timeout, params):
        self.calls.append(params["query"])
        metric = next(m for m, q in QUERIES.items()
                      if params["query"].startswith(q.split("{")[0]))
        stage = params["query"].split('stage="')[1].split('"')[0]
        t, values = params["start"], []
        while t <= params["end"]:
            v = self.value(metric, stage, t)
            if v is not None:
                values.append([t, str(v)])
            t += params["step"]

        class R:
            def raise_for_status(self):
                pass

            def json(self):
                return {"data": {"result": [{"values": values}] if values else []}}

        return R()


def healthy(metric, stage, t):
    return {"latency_p95_ms": 80.0, "error_rate": 0.01, "throughput_rps": 50.0, "cpu_pct": 30.0,
            "replicas": 1}[metric]


def test_rows_taken_while_the_target_was_down_or_failing_are_left_out(tmp_path, monkeypatch,
                                                                       caplog):
    def value(metric, stage, t):
        k = int(t - 1000)
        if k < 5:  # just after a start: the series do not exist yet, the query gives zeros
            return 0.0 if metric in ("latency_p95_ms", "error_rate", "throughput_rps") else (
                0 if metric == "replicas" else None)
        if 20 <= k < 24 and metric == "error_rate":  # a restart in the middle: every request fails
            return 1.0
        return healthy(metric, stage, t)

    FakePrometheus(value, monkeypatch)
    src = SourceConf(url="http://127.0.0.1:9", queries=QUERIES)
    with caplog.at_level(logging.WARNING):
        out = record(src, ["serve"], 59, tmp_path / "rec", step_s=1.0, end=1059)
    ds = load_dataset(out)
    rec = ds.metadata["recording"]
    assert rec["timestamps"] == 60 and rec["kept"] == 51
    assert rec["excluded"] == {"down": 5, "failing": 4}
    assert ds.frame.error_rate.max() <= 0.05 and ds.frame.throughput_rps.min() > 0
    assert ds.metadata["name"] == "rec" and "tmp" not in json.dumps(ds.metadata["name"])
    assert not any("tmp" in str(f) for f in ds.metadata["source_files"])
    assert "only" not in caplog.text  # 85 % healthy: no warning


def test_a_mostly_unhealthy_recording_warns_and_a_hopeless_one_is_refused(tmp_path, monkeypatch,
                                                                         caplog):
    def flaky(metric, stage, t):
        if metric == "error_rate" and int(t) % 3 == 0:
            return 0.5
        return healthy(metric, stage, t)

    FakePrometheus(flaky, monkeypatch)
    src = SourceConf(url="http://127.0.0.1:9", queries=QUERIES)
    with caplog.at_level(logging.WARNING):
        out = record(src, ["serve"], 59, tmp_path / "flaky", end=1059)
    assert "only 67 % of the timestamps were healthy" in caplog.text
    assert load_dataset(out).metadata["recording"]["excluded"] == {"failing": 20}

    FakePrometheus(lambda m, s, t: 0 if m == "replicas" else healthy(m, s, t), monkeypatch)
    with pytest.raises(HealgymError) as err:
        record(src, ["serve"], 59, tmp_path / "down", end=1059)
    assert "only 0 of 60 timestamps were healthy" in str(err.value)
    assert "'down': 60" in str(err.value) and "at least 10" in str(err.value)
    assert not (tmp_path / "down").exists()  # nothing written


def test_one_unhealthy_stage_excludes_the_whole_timestamp(tmp_path, monkeypatch):
    def value(metric, stage, t):
        if stage == "features" and metric == "error_rate" and int(t) % 2:
            return 0.2
        return healthy(metric, stage, t)

    FakePrometheus(value, monkeypatch)
    src = SourceConf(url="http://127.0.0.1:9", queries=QUERIES)
    ds = load_dataset(record(src, ["features", "serve"], 39, tmp_path / "r", end=1039))
    assert ds.metadata["recording"]["kept"] == 20
    assert ds.frame.groupby("stage").size().to_dict() == {"features": 20, "serve": 20}
