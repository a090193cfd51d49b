"""Guardrails: cooldowns, rate limits, budgets, the kill switch, shadow mode, approval."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healgym.errors import ConfigError
from healgym.serving.config import GuardConf
from healgym.serving.guardrails import Guard, action_infos
from tests.serving_helpers import model


# ---------------------------------------------------------------- guardrails
@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 22), st.floats(0, 120)), min_size=1, max_size=80),
       st.integers(1, 4), st.floats(10, 600), st.integers(1, 6))
def test_guardrails_hold_under_random_proposals(proposals, rate, cooldown, hourly):
    m = model()
    infos = action_infos(m)
    allowed = [a.name for a in infos if a.kind in ("noop", "restart", "scale_up", "backfill")]
    g = Guard(GuardConf(allowed=allowed, cooldown_s=cooldown, rate_limit=rate,
                        rate_window_s=600, hourly_budget=hourly, cost_budget_per_hour=60.0,
                        approval_risk="never"), infos)
    now, executed = 0.0, []
    for action, dt in proposals:
        now += dt
        r = g.check(action, now)
        if r.blocked:
            assert r.action == g.safe and any(not v.ok for v in r.verdicts)
        if r.action != g.safe:
            g.record(r.action, now)
            executed.append((now, r.action))
    for i, (t, a) in enumerate(executed):
        assert infos[a].name in allowed
        window = [x for x in executed[: i + 1] if t - x[0] < 600]
        hour = [x for x in executed[: i + 1] if t - x[0] < 3600]
        assert len(window) <= rate and len(hour) <= hourly
        assert sum(infos[x[1]].cost for x in hour) <= 60.0
        same = [x[0] for x in executed[:i] if infos[x[1]].target == infos[a].target]
        assert not same or t - max(same) >= cooldown


def test_kill_switch_shadow_confidence_and_approval(tmp_path):
    infos = action_infos(model())
    restart = next(a.index for a in infos if a.name == "restart_serve")
    rollback = next(a.index for a in infos if a.name == "rollback")
    kill = tmp_path / "STOP"
    g = Guard(GuardConf(kill_switch_file=str(kill), min_confidence=0.5), infos)
    assert not g.check(restart, 0.0).blocked
    kill.touch()
    r = g.check(restart, 0.0)
    assert r.blocked and r.verdicts[-1].check == "kill_switch"
    kill.unlink()
    assert g.check(restart, 0.0, confidence=0.2).verdicts[-1].check == "confidence"
    assert g.check(rollback, 0.0).needs_approval  # rollback is high risk
    assert Guard(GuardConf(shadow=True), infos).check(restart, 0.0).shadow
    only = Guard(GuardConf(incident_only=True), infos)
    r = only.check(restart, 0.0, incident_open=False)
    assert r.blocked and r.action == only.safe and r.verdicts[-1].check == "incident_only"
    assert not only.check(restart, 0.0, incident_open=True).blocked
    assert not g.check(restart, 0.0, incident_open=False).blocked  # off by default
    with pytest.raises(ConfigError, match="unknown action names"):
        Guard(GuardConf(allowed=["restart_srve"]), infos)
