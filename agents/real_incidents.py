"""The held-out real-incident test (issue 16): every policy on the dataset's labelled incidents.

With ``replay_incidents=True`` each episode replays one labelled fault window of the real
telemetry (the fault is in the data; healing splices healthy data in), chaos off, so the only
incident is the real one. Per incident and policy:

* **MTTR** from the label's start (censored: an incident still open at the end counts until
  then);
* **reaction delay**: from the label's start to the policy's first action (not noop) at or after
  it; None when it never acts before the incident ends;
* **localisation**: whether that first action targets the labelled entity's stage (a
  pipeline-wide action such as rollback, retrain or escalate does not localise anything).

AIOpsLab (detection, localisation, mitigation as separate tasks) and ITBench (localisation
accuracy, time to diagnose) report the same split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from agents import evaluation
from healgym.policy import Policy

#: (time s, action index) of each action other than noop, in order.
Trace = list[tuple[float, int]]


def traced_episode(env: Any, policy: Policy, seed: int) -> tuple[dict[str, Any], Trace]:
    """One episode; its metrics and the time of each non-noop action."""
    obs, info = env.reset(seed=seed)
    policy.reset()
    trace: Trace = []
    while True:
        t = float(info["time_s"])
        a = int(policy.decide(obs, info).action)
        if a != 0:
            trace.append((t, a))
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            return info["episode_metrics"], trace


def score_incidents(metrics: dict[str, Any], trace: Trace, stage_of: Sequence[int],
                    stages: Sequence[str]) -> list[dict[str, Any]]:
    """The replayed (labelled) incidents of one episode, scored. ``stage_of[a]``: the stage
    index action ``a`` targets (-1: pipeline-wide)."""
    out = []
    for inc in metrics["incidents"]:
        if inc.get("source") != "replay":
            continue
        onset = float(inc["onset_s"])
        end = float(inc["resolved_s"]) if inc.get("resolved_s") is not None else float(
            metrics["elapsed_s"])
        first = next(((t, a) for t, a in trace if onset <= t < end), None)
        target = None if first is None else (
            "pipeline" if stage_of[first[1]] < 0 else stages[stage_of[first[1]]])
        out.append({
            "fault": inc["fault"], "stage": inc["stage"], "onset_s": onset,
            "resolved": inc.get("mttr_s") is not None,
            "mttr_censored_s": end - onset,
            "reaction_delay_s": None if first is None else first[0] - onset,
            "first_action_target": target,
            "localised": target == inc["stage"],
        })
    return out


def run(make_env: Callable[[], Any], policies: Sequence[Policy], seeds: Sequence[int],
        progress: Callable[[], None] | None = None) -> list[list[dict[str, Any]]]:
    """Per policy (one per training seed), the scored incidents of every episode seed."""
    out = []
    for policy in policies:
        env = make_env()
        m = env.unwrapped.model
        stage_of = [a.stage for a in m.actions]
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            metrics, trace = traced_episode(env, policy, seed)
            rows.extend(score_incidents(metrics, trace, stage_of, m.stages))
            if progress is not None:
                progress()
        env.close()
        out.append(rows)
    return out


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson interval of a proportion k / n (inside [0, 1] by construction)."""
    if n == 0:
        return float("nan"), float("nan")
    z = float(stats.norm.ppf(0.975))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summary(rows: list[dict[str, Any]], horizon_s: float) -> dict[str, Any]:
    """One policy's figures over its scored incidents (t-intervals clipped to [0, horizon])."""
    n = len(rows)

    def mean_ci(x: list[float]) -> dict[str, float]:
        m, lo, hi = evaluation.mean_ci(x)  # the t-interval the other tables use
        return {"value": m, "ci_low": max(0.0, lo), "ci_high": min(horizon_s, hi)}

    acted = [r["reaction_delay_s"] for r in rows if r["reaction_delay_s"] is not None]
    k = sum(r["localised"] for r in rows)
    lo, hi = wilson(k, n)
    return {
        "incidents": n,
        "resolved": sum(r["resolved"] for r in rows),
        "mttr_censored_s": mean_ci([r["mttr_censored_s"] for r in rows]),
        "reaction_delay_s": mean_ci(acted),
        "acted_share": len(acted) / n if n else float("nan"),
        "localisation": {"value": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi},
    }


def markdown(summaries: dict[str, dict[str, Any]], title: str) -> str:
    def ci(d: dict[str, float], digits: int = 0) -> str:
        if not np.isfinite(d["value"]):
            return "-"
        f = f"{{:.{digits}f}}"
        return f"{f.format(d['value'])} [{f.format(d['ci_low'])}, {f.format(d['ci_high'])}]"

    rows = [f"**{title}** (each episode replays one labelled incident of the real telemetry, "
            "chaos off; 95 % intervals)", "",
            "| policy | incidents | resolved | censored MTTR s | reaction delay s | acted | "
            "localisation (first action on the labelled stage) |",
            "|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        rows.append(f"| {name} | {s['incidents']} | {s['resolved']} | "
                    f"{ci(s['mttr_censored_s'])} | {ci(s['reaction_delay_s'])} | "
                    f"{100 * s['acted_share']:.0f} % | {ci(s['localisation'], 2)} |")
    return "\n".join(rows)
