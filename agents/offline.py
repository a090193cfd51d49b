"""Learning from the decision log: tabular fine-tuning on logged transitions and human
demonstrations (the transitions themselves: :mod:`healgym.analysis.offline`).

:func:`finetune_qtable` updates a tabular policy from them: offline Q-learning sweeps over the
transitions (bootstrapping over the actions valid in the next observation), then the large-margin
demonstration loss of DQfD (Hester et al., 2018, eq. 4), ``max_a [Q(s,a) + l(a_E,a)] - Q(s,a_E)``,
minimised exactly in its tabular form: ``Q(s, a_E)`` is raised to ``margin`` above every other
valid action's value. In states the log covers, actions it never shows are kept ``margin``
below the best one it does (BCQ's support constraint in tabular form, Fujimoto et al., 2019):
offline Q-learning would otherwise overrate them, and the policy would change where nobody
showed it anything. Overrides whose incident was left unresolved are not trusted by default
(``trust="resolved"``): a human can be wrong too. Where demonstrations in one discretised state
disagree, the majority (latest on a tie) wins.

:func:`export_offline_dataset` writes the transitions as a versioned Parquet folder that RLlib's
offline API reads (``BCConfig().offline_data(input_=[folder/data])``): the columns of RLlib's
single-agent schema, plus ``provenance.parquet`` (decision ids, who chose the action, masks) and
``metadata.json`` (format version, spaces, the observation layout, the source log); ``data_masked``
holds the same rows with each observation's action mask appended, for healgym's masking modules.

The log-side tools (:func:`transitions_from_log`, :func:`log_reward`, :func:`mask_from_obs`,
:func:`export_offline_dataset`) live in :mod:`healgym.analysis.offline` and are importable from
here too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from healgym.analysis.offline import (
    DATASET_FORMAT,
    DATASET_VERSION,
    Transitions,
    export_offline_dataset,
    load_offline_metadata,
    log_reward,
    mask_from_obs,
    transitions_from_log,
)

__all__ = ["DATASET_FORMAT", "DATASET_VERSION", "FinetuneReport", "Transitions",
           "export_offline_dataset", "finetune_qtable", "load_offline_metadata", "log_reward",
           "mask_from_obs", "transitions_from_log"]


@dataclass
class FinetuneReport:
    transitions: int
    demonstrations: int
    demo_states: int
    conflicts: int  # demonstration states whose humans disagreed with each other
    unreachable: int  # demonstrations of an action the mask forbids in their state
    changed_states: int  # states whose greedy action changed
    demo_agreement_before: float  # share of demonstrations the greedy policy already followed
    demo_agreement_after: float
    sources: dict[str, int]


def finetune_qtable(agent: Any, tr: Transitions, epochs: int = 20, alpha: float = 0.1,
                    gamma: float | None = None, margin: float = 1.0, td: bool = True,
                    seed: int = 0) -> FinetuneReport:
    """Update ``agent`` (a :class:`~agents.qlearning.QLearningAgent`) in place from logged
    transitions and demonstrations; see the module docstring."""
    model = agent.model
    gamma = agent.config.gamma if gamma is None else gamma
    q = agent.q
    s = agent.disc.states(model, tr.obs) if len(tr) else np.zeros(0, dtype=np.int64)
    s2 = agent.disc.states(model, tr.next_obs) if len(tr) else s
    m1 = mask_from_obs(model, tr.obs).astype(bool) if len(tr) else np.zeros((0, q.shape[1]),
                                                                            dtype=bool)
    m2 = mask_from_obs(model, tr.next_obs).astype(bool) if len(tr) else m1
    greedy_before = agent.greedy(s, m1)
    all_before = q.argmax(axis=1).copy()
    # demonstrations: the majority action per discretised state (latest wins a tie)
    demos: dict[int, list[int]] = {}
    unreachable = 0
    for i in np.flatnonzero(tr.demo):
        if not m1[i, tr.actions[i]]:  # the mask forbids it there (an action was in flight)
            unreachable += 1
            continue
        demos.setdefault(int(s[i]), []).append(int(tr.actions[i]))
    target_action: dict[int, int] = {}
    conflicts = 0
    for st, acts in demos.items():
        counts = Counter(acts)
        top = max(counts.values())
        target_action[st] = next(a for a in reversed(acts) if counts[a] == top)
        conflicts += len(counts) > 1
    demo_mask = {int(s[i]): m1[i] for i in np.flatnonzero(tr.demo) if m1[i, tr.actions[i]]}
    # Support: the actions the log shows in each state. Offline Q-learning overestimates the
    # actions a log never tried (their values are never corrected), so in logged states they are
    # kept below the best supported action (the tabular form of BCQ's support constraint,
    # Fujimoto et al., 2019): the policy changes only toward what the log or a human did.
    support: dict[int, np.ndarray] = {}
    for j in range(len(tr)):
        row = support.setdefault(int(s[j]), np.zeros(q.shape[1], dtype=bool))
        row[tr.actions[j]] = True
    states_logged = np.fromiter(support, dtype=np.int64, count=len(support))
    supported = np.array([support[int(x)] for x in states_logged]).reshape(-1, q.shape[1])

    def constrain() -> None:
        if not len(states_logged):
            return
        rows = q[states_logged]
        best = np.where(supported, rows, -np.inf).max(axis=1, keepdims=True)
        q[states_logged] = np.where(supported, rows, np.minimum(rows, best - margin))

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        if td and len(tr):
            order = rng.permutation(len(tr))
            for i in order:  # sequential sweeps: the log is small, exactness beats speed
                nxt = 0.0 if tr.terminated[i] else float(np.where(m2[i], q[s2[i]],
                                                                  -np.inf).max())
                q[s[i], tr.actions[i]] += alpha * (tr.rewards[i] + gamma * nxt
                                                   - q[s[i], tr.actions[i]])
        constrain()
        for st, a_e in target_action.items():
            valid = demo_mask[st].copy()
            valid[a_e] = False
            if valid.any():
                best_other = float(q[st][valid].max())
                if q[st, a_e] < best_other + margin:
                    q[st, a_e] = best_other + margin
    greedy_after = agent.greedy(s, m1)
    d_idx = np.flatnonzero(tr.demo)
    before = float((greedy_before[d_idx] == tr.actions[d_idx]).mean()) if len(d_idx) else np.nan
    after = float((greedy_after[d_idx] == tr.actions[d_idx]).mean()) if len(d_idx) else np.nan
    return FinetuneReport(
        transitions=len(tr), demonstrations=int(tr.demo.sum()), demo_states=len(target_action),
        conflicts=conflicts, unreachable=unreachable,
        changed_states=int((q.argmax(axis=1) != all_before).sum()),
        demo_agreement_before=before, demo_agreement_after=after,
        sources=dict(Counter(tr.source)))
