"""The evaluation protocol that can rank policies (issue 15): every policy on the same held-out
episodes, each distribution reported on its own, paired statistics against a reference policy.

A *distribution* is one kind of held-out episode: in-distribution random chaos on held-out
telemetry windows, or one scenario file (never seen in training). Distributions are never
averaged together. A learned policy trained with several seeds contributes each seed's episodes
(the same episodes for every seed), and its bootstrap is stratified by training seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.evaluation import evaluate
from agents.paired import censored_mttr, compare, per_fault_mttr
from healgym.policy import Policy


@dataclass
class PolicyRuns:
    """A policy's episodes on one distribution: ``episodes[s][i]`` is training seed ``s``'s
    run of episode ``i`` (one seed for a policy that is not trained)."""

    name: str
    episodes: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def flat(self) -> list[dict[str, Any]]:
        return [e for seed in self.episodes for e in seed]

    @property
    def groups(self) -> list[int]:
        return [s for s, seed in enumerate(self.episodes) for _ in seed]


def batched(policy: Any) -> bool:
    """Whether ``policy`` says it acts on a batch (``acts_in_batches``: ``act(obs (N, n), mask
    (N, A)) -> actions (N,)``, deterministic), so it can play episodes in lockstep. A policy with
    memory across steps (the router's window) also has ``begin_batch(n)``, called as ``n``
    episodes start, and keeps one row of memory per episode."""
    return bool(getattr(policy, "acts_in_batches", False)) and callable(getattr(policy, "act",
                                                                                 None))


def play_batched(make_vec: Callable[[int], Any], policy: Any, seeds: Sequence[int],
                 scenario: str | None, progress: Callable[[], None] | None = None,
                 chunk: int = 128) -> list[dict[str, Any]]:
    """A batch-acting policy on every episode seed, ``chunk`` episodes in lockstep in the vector
    env: sub-env ``i`` reset with seed ``s`` is the scalar env reset with ``s`` (the vector env's
    contract), so the episodes are the ones :func:`play` runs one by one, and the policy's
    forward pass is one call per step for the whole chunk."""
    out: list[dict[str, Any]] = []
    seeds = list(seeds)
    options = None if scenario is None else {"scenario": scenario}
    for start in range(0, len(seeds), chunk):
        part = seeds[start:start + chunk]
        venv = make_vec(len(part))
        try:
            obs, info = venv.reset(seed=part, options=options)
            if hasattr(policy, "begin_batch"):
                policy.begin_batch(len(part))
            done: list[dict[str, Any] | None] = [None] * len(part)
            while any(d is None for d in done):
                obs, _, terminated, truncated, info = venv.step(
                    policy.act(obs, info["action_mask"]))
                for i in np.flatnonzero(terminated | truncated).tolist():
                    if done[i] is None:
                        done[i] = dict(info["episode_metrics"][i])
                        if progress is not None:
                            progress()
        finally:
            venv.close()
        out.extend(d for d in done if d is not None)
    return out


def play(make_env: Callable[[], Any], policies: Sequence[Policy], seeds: Sequence[int],
         options: dict[str, Any] | None, progress: Callable[[], None] | None = None,
         make_vec: Callable[[int], Any] | None = None) -> list[list[dict[str, Any]]]:
    """Each policy (one per training seed) on every episode seed; with ``make_vec`` (a vector
    env of N pipelines on the same dynamics), batch-acting policies play in lockstep
    (:func:`play_batched`: the same episodes, one forward pass per step)."""
    if options and set(options) - {"scenario"}:
        raise ValueError(f"play: only a scenario option is supported, got {sorted(options)}")
    scenario = None if options is None else options.get("scenario")
    def fixed(policy: Policy) -> Callable[[Any], Policy]:
        return lambda env: policy

    return [play_batched(make_vec, p, seeds, scenario, progress)
            if make_vec is not None and batched(p)
            else evaluate(make_env, fixed(p), seeds, (scenario,), progress) for p in policies]


def paired_summary(runs: dict[str, PolicyRuns], reference: str, horizon_s: float,
                   reps: int = 2000) -> dict[str, dict[str, Any]]:
    """Per policy: its own figures and the paired comparison with ``reference``."""
    ref = runs[reference]
    out: dict[str, dict[str, Any]] = {}
    for name, r in runs.items():
        n_seeds = len(r.episodes)
        ref_eps = [e for _ in range(n_seeds) for e in ref.episodes[0]]
        flat = r.flat
        incidents = sum(len(e["incidents"]) for e in flat)
        harmful = sum(e.get("ineffective_actions", 0) for e in flat)
        actions = sum(e["n_actions"] for e in flat)
        row: dict[str, Any] = {
            "training_seeds": n_seeds, "episodes": len(flat), "incidents": incidents,
            "uptime_mean_pct": float(np.mean([e["uptime_pct"] for e in flat])),
            "mttr_censored_mean_s": float(np.nanmean([censored_mttr(e) for e in flat]))
            if incidents else float("nan"),
            "harmful_per_incident": harmful / incidents if incidents else float("nan"),
            "actions_per_incident": actions / incidents if incidents else float("nan"),
            "per_fault": per_fault_mttr(flat),
        }
        for metric in ("uptime_pct", "mttr_censored_s", "reward", "harmful_actions"):
            row[metric] = compare(flat, ref_eps, metric, groups=r.groups, reps=reps,
                                  horizon_s=horizon_s)
        out[name] = row
    return out


def _ci(d: dict[str, float], digits: int = 1, signed: bool = False) -> str:
    if not np.isfinite(d["value"]):
        return "-"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(d['value'])} [{f.format(d['ci_low'])}, {f.format(d['ci_high'])}]"


def markdown(summary: dict[str, dict[str, Any]], reference: str, title: str) -> str:
    """One distribution's table, with a legend line."""
    rows = [f"**{title}** (paired against `{reference}`; 95 % bootstrap intervals)", "",
            "| policy | seeds x episodes | uptime % (IQM) | uptime diff pp | P(better uptime) | "
            "censored MTTR s | MTTR diff s | harmful actions / incident |",
            "|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        n_ep = s["episodes"] // max(s["training_seeds"], 1)
        diff = "(reference)" if name == reference else _ci(s["uptime_pct"]["difference"],
                                                            1, True)
        mdiff = "(reference)" if name == reference else _ci(
            s["mttr_censored_s"]["difference"], 0, True)
        poi = "-" if name == reference else _ci(s["uptime_pct"]["prob_improvement"], 2)
        mttr = f"{s['mttr_censored_mean_s']:.0f}" if np.isfinite(
            s["mttr_censored_mean_s"]) else "-"
        harm = f"{s['harmful_per_incident']:.2f}" if np.isfinite(
            s["harmful_per_incident"]) else "-"
        rows.append(f"| {name} | {s['training_seeds']} x {n_ep} | "
                    f"{_ci(s['uptime_pct']['iqm'])} | {diff} | {poi} | {mttr} | {mdiff} | "
                    f"{harm} |")
    return "\n".join(rows)


def per_fault_markdown(summary: dict[str, dict[str, Any]], title: str) -> str:
    """Censored MTTR per fault type (the incident's first fault), one column per policy, with
    the incidents counted (the same episodes for every policy; a learned policy's count pools
    its seeds)."""
    faults = sorted({f for s in summary.values() for f in s["per_fault"]})
    names = list(summary)
    rows = [f"**{title}: censored MTTR s by fault type** (incidents in brackets)", "",
            "| fault | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for f in faults:
        cells = []
        for n in names:
            d = summary[n]["per_fault"].get(f)
            cells.append("-" if d is None else f"{d['mttr_mean_s']:.0f} ({d['incidents']})")
        rows.append(f"| {f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


LEGEND = """Legend: every policy plays the same held-out episodes (seeds), so differences are
paired episode by episode. uptime % (IQM): the interquartile mean of episode uptime. uptime
diff: the policy's mean uptime minus the reference's, percentage points. P(better uptime): the
share of episodes where the policy's uptime beats the reference's (ties half). censored MTTR:
mean time to recover, an incident still open at the end counting until then. harmful actions:
actions that completed and fixed nothing. A learned policy's rows pool its training seeds
(bootstrap stratified by seed). Intervals are clipped to the feasible range."""
