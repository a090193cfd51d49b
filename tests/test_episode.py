"""An episode's set-up draws (healgym.sim.episode): functions of the episode key, with the
distributions they stand for."""

from __future__ import annotations

import numpy as np
import pytest

from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.sim.episode import (
    NAME_RANK,
    draw_schedule,
    episode_consts,
    fill_rows,
    next_key,
    seed_key,
)
from healgym.sim.faults import LIBRARY


@pytest.fixture(scope="module")
def model():
    return PipelineHealEnv(episode_steps=360, chaos={"rate_scale": 3.0}).model


def test_keys_are_a_reproducible_chain():
    k = seed_key(7)
    assert int(k) == int(seed_key(7)) and int(k) != int(seed_key(8))
    np.testing.assert_array_equal(seed_key(np.array([7, 8])), [seed_key(7), seed_key(8)])
    chain = [int(k)]
    for _ in range(50):
        chain.append(int(next_key(np.uint64(chain[-1]))))
    assert len(set(chain)) == len(chain)


def test_arrivals_are_poisson_with_the_configured_rates(model):
    """Over many episodes, each fault's mean count is rate x span (within 5 standard errors),
    times are uniform in (warm-up, horizon], the schedule is sorted."""
    ec = episode_consts(model, None)
    span = ec.horizon_s - ec.lo_s
    counts = np.zeros(len(LIBRARY))
    times = []
    n_ep = 1500
    names = [f.name for f in LIBRARY]
    for e in range(n_ep):
        events, dropped = draw_schedule(ec, int(seed_key(e)))
        assert dropped == 0
        keys = [(ev.at_s, NAME_RANK[names.index(ev.fault)], ev.stage) for ev in events]
        assert keys == sorted(keys)
        for ev in events:
            f = names.index(ev.fault)
            counts[f] += 1
            times.append(ev.at_s)
            assert ev.stage in ec.choices[f, : ec.n_choices[f]]
            assert model.chaos.severity[0] <= ev.severity <= model.chaos.severity[1]
    lam = ec.rates * span
    assert np.all(np.abs(counts / n_ep - lam) <= 5 * np.sqrt(lam / n_ep) + 1e-9)
    t = np.array(times)
    assert t.min() > ec.lo_s and t.max() <= ec.horizon_s
    hist = np.histogram(t, bins=4, range=(ec.lo_s, ec.horizon_s))[0]
    assert np.all(np.abs(hist - t.size / 4) < 5 * np.sqrt(t.size / 4))


def test_rows_are_runs_of_real_data_from_the_asked_start(model):
    ec = episode_consts(model, None)
    rows = np.empty(ec.rows_needed, np.int64)
    starts = []
    for e in range(200):
        fill_rows(np.uint64(seed_key(e)), 0, ec.seg_start, ec.seg_end, ec.rows_needed, -1, rows)
        assert np.all(np.diff(rows) == 1)  # one segment here: one contiguous run
        assert rows[0] >= ec.seg_start[0] and rows[-1] < ec.seg_end[-1]
        starts.append(rows[0])
    assert len(set(starts)) > 150  # spread over the data
    fill_rows(np.uint64(1), 0, ec.seg_start, ec.seg_end, ec.rows_needed, 1000, rows)
    assert rows[0] == 1000


def test_short_segments_are_chained():
    """Telemetry in runs shorter than an episode: the rows chain several runs, each run's
    rows contiguous, every row inside a run."""
    seg_start = np.array([0, 50, 120, 400], dtype=np.int64)
    seg_end = np.array([30, 90, 200, 430], dtype=np.int64)
    rows = np.empty(150, np.int64)
    for e in range(50):
        fill_rows(np.uint64(seed_key(e)), 0, seg_start, seg_end, rows.size, -1, rows)
        inside = ((rows[:, None] >= seg_start) & (rows[:, None] < seg_end)).any(axis=1)
        assert inside.all()
        breaks = np.flatnonzero(np.diff(rows) != 1)
        assert breaks.size >= 1  # no run holds 150 rows


def test_scenario_entries_come_first_among_equals(model):
    sc = {"name": "s", "random_chaos": False,
          "faults": [{"at": 100, "fault": "gpu_oom", "stage": "serve"},
                     {"at": 100, "fault": "null_surge",
                      "stage": "ingest"},
                     {"at": 50, "fault": "process_crash", "stage": "train"}]}
    from healgym.sim.chaos import load_scenario

    ec = episode_consts(model, load_scenario(sc))
    events, dropped = draw_schedule(ec, 123)
    assert dropped == 0
    assert [(e.at_s, e.fault) for e in events] == [
        (50.0, "process_crash"), (100.0, "gpu_oom"), (100.0, "null_surge")]
    assert all(e.source == "scenario" for e in events)
