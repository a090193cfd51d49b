"""Evaluate policies on episodes and summarise the incident metrics with 95 % confidence
intervals.

MTTR is reported two ways: over resolved incidents only (``mttr_*``), and censored
(``mttr_censored_mean``), where an incident still open when its episode ends counts as lasting
until then: a policy that leaves incidents open cannot look fast by leaving them out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from healgym.policy import Policy, run_episode

__all__ = ["evaluate", "run_episode", "summarize"]

BOOTSTRAP = 2000


def evaluate(make_env: Callable[[], Any], policy_factory: Callable[[Any], Policy],
             seeds: Sequence[int], scenarios: Sequence[str | None] = (None,),
             progress: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Episode metrics of a policy over every (scenario, seed) pair; ``progress()`` is called
    after each episode."""
    env = make_env()
    policy = policy_factory(env)
    out = []
    for scenario in scenarios:
        options = {"scenario": scenario} if scenario is not None else None
        for seed in seeds:
            out.append(run_episode(env, policy, seed, options))
            if progress is not None:
                progress()
    env.close()
    return out


def mean_ci(x: Sequence[float]) -> tuple[float, float, float]:
    """Mean and the 95 % t-interval."""
    a = np.asarray(x, dtype=float)
    if a.size == 0:
        return (float("nan"),) * 3
    m = float(a.mean())
    if a.size < 2 or a.std() == 0:
        return m, m, m
    half = float(stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size))
    return m, m - half, m + half


def quantile_ci(x: Sequence[float], q: float, seed: int = 0) -> tuple[float, float, float]:
    """A quantile and its 95 % bootstrap percentile interval (seeded)."""
    a = np.asarray(x, dtype=float)
    if a.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    boots = np.quantile(rng.choice(a, size=(BOOTSTRAP, a.size), replace=True), q, axis=1)
    return float(np.quantile(a, q)), float(np.quantile(boots, 0.025)), \
        float(np.quantile(boots, 0.975))


def summarize(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    incidents = [i for e in episodes for i in e["incidents"]]
    mttr = [i["mttr_s"] for i in incidents if i["mttr_s"] is not None]
    censored = [i["mttr_s"] if i["mttr_s"] is not None else e["elapsed_s"] - i["onset_s"]
                for e in episodes for i in e["incidents"]]
    per_ep_actions = [e["n_actions"] for e in episodes]
    n_inc = max(len(incidents), 1)

    def pack(t: tuple[float, float, float], lo: float = 0.0, hi: float = float("inf")
             ) -> dict[str, float]:
        # a t-interval can leave the metric's range with few episodes: clip it to the range
        return {"value": t[0], "ci_low": max(t[1], lo), "ci_high": min(t[2], hi)}

    return {
        "episodes": len(episodes),
        "incidents": len(incidents),
        "mttr_mean_s": pack(mean_ci(mttr)),
        "mttr_median_s": pack(quantile_ci(mttr, 0.5)),
        "mttr_p95_s": pack(quantile_ci(mttr, 0.95)),
        "mttr_censored_mean_s": pack(mean_ci(censored)),
        "uptime_pct": pack(mean_ci([e["uptime_pct"] for e in episodes]), 0.0, 100.0),
        "downtime_s": pack(mean_ci([e["downtime_s"] for e in episodes])),
        "unresolved_per_episode": pack(mean_ci([e["unresolved_incidents"] for e in episodes])),
        "actions_per_incident": pack(mean_ci(
            [e["n_actions"] / e["n_incidents"] for e in episodes if e["n_incidents"]])),
        "actions_per_incident_pooled": sum(per_ep_actions) / n_inc,
        # harmful: an action that completed and fixed nothing (the issue's "made an incident
        # worse or fixed nothing"; every action that heals nothing costs time, money or traffic)
        "harmful_actions": pack(mean_ci([e.get("ineffective_actions", 0) for e in episodes])),
        "action_cost": pack(mean_ci([e["action_cost"] for e in episodes])),
        "reward": pack(mean_ci([e["total_reward"] for e in episodes]), -float("inf")),
    }


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """The headline table: one row per policy."""
    def fmt(d: dict[str, float], digits: int = 0) -> str:
        return (f"{d['value']:.{digits}f} [{d['ci_low']:.{digits}f}, {d['ci_high']:.{digits}f}]"
                if np.isfinite(d["value"]) else "-")

    rows = ["| policy | MTTR mean s | MTTR censored mean s | MTTR p95 s | uptime % | "
            "unresolved/episode | actions/incident | harmful actions/episode | cost |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, s in results.items():
        rows.append(f"| {name} | {fmt(s['mttr_mean_s'])} | {fmt(s['mttr_censored_mean_s'])} | "
                    f"{fmt(s['mttr_p95_s'])} | {fmt(s['uptime_pct'], 2)} | "
                    f"{fmt(s['unresolved_per_episode'], 2)} | "
                    f"{fmt(s['actions_per_incident'], 1)} | "
                    f"{fmt(s['harmful_actions'], 1)} | {fmt(s['action_cost'])} |")
    return "\n".join(rows)
