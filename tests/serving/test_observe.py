"""Observe: Prometheus and scraped metrics; bad readings never reach the policy."""

from __future__ import annotations

import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healgym.serving.config import SourceConf
from healgym.serving.observe import AdapterState, Observer, PrometheusSource, ScrapeSource
from tests.serving.common import adapter
from tests.serving_helpers import DictSource, model


# ---------------------------------------------------------------- observe
def test_missing_stale_or_non_finite_metrics_never_reach_the_policy(tmp_path):
    a, src = adapter(tmp_path)
    did = a.step()
    assert a.log.record(did)["status"] == "proposed"
    for spoil, says in [(lambda: src.values.pop(("error_rate", "serve")),
                         "error_rate[serve]: missing"),
                        (lambda: src.values.__setitem__(("latency_p95_ms", "ingest"),
                                                        float("nan")), "not finite"),
                        (lambda: setattr(src, "age_s", 3600.0), "stale (3600 s old")]:
        src.healthy()
        src.age_s = 0.0
        spoil()
        rec = a.log.record(a.step())
        assert rec["status"] == "skipped" and says in rec["reason"], rec["reason"]
        assert rec["observation"] is None and rec["executed_action"] is None
        assert any(says in al for al in a.alerts)


def test_prometheus_source_queries_each_stage(stand_in):
    handler, url = stand_in
    now = time.time()
    handler.routes[("GET", "/api/v1/query")] = (200, {"status": "success", "data": {
        "resultType": "vector", "result": [{"metric": {}, "value": [now, "0.25"]}]}})
    conf = SourceConf(url=url, queries={"error_rate": 'rate(errors{stage="{stage}"}[1m])',
                                        "accuracy": "model_accuracy"})
    got = PrometheusSource(conf).read(["ingest", "serve"])
    assert got[("error_rate", "serve")].value == 0.25 and got[("accuracy", None)].ts == now
    queries = sorted(r["path"] for r in handler.seen)
    assert len(queries) == 3 and any("stage%3D%22serve%22" in q for q in queries)


def test_scrape_source_reads_metrics_endpoints(stand_in):
    handler, url = stand_in
    handler.routes[("GET", "/metrics")] = (200, (
        "# TYPE error_rate gauge\nerror_rate{stage=\"serve\"} 0.5\n"
        "# TYPE accuracy gauge\naccuracy 0.81\n"))
    got = ScrapeSource(SourceConf(kind="scrape", targets=[f"{url}/metrics"])).read(["serve"])
    assert got[("error_rate", "serve")].value == 0.5 and got[("accuracy", None)].value == 0.81


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["latency_p95_ms", "error_rate", "throughput_rps",
                                        "cpu_pct", "accuracy", "drift_psi", "replicas"]),
                       st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=7))
def test_fuzzed_metrics_never_crash_the_loop(values):
    m = model()
    src = DictSource(m)
    for k, v in values.items():
        src.values[(k, None if k in ("accuracy", "drift_psi") else "serve")] = float(v)
    obs = Observer(m, SourceConf(), src)
    reading = obs.read(AdapterState())
    if reading.signals is not None:
        from healgym.sim.observation import encode

        o = encode(m, reading.signals)
        assert np.isfinite(o).all() and m.observation_space.contains(o)
    else:
        assert reading.problems
