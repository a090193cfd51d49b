"""``healgym/PipelineHeal-v1``: heal an ML pipeline whose telemetry is replayed from real logs.

One model, not two: the scalar env is a thin Gymnasium adapter over the batch core of
:mod:`healgym.envs.core` with one pipeline, the same core the vector env adapts. Its state lives
in the core's arrays and a step is the same compiled call (:mod:`healgym.envs._kernel`); this
class adds the single-env API: scalar observations and rewards, ``info["faults"]``, truncation
that needs a ``reset``, rendering, and read-only views of the state for analysis.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from healgym.envs.core import BatchCore
from healgym.envs.state import DRIFT_KS, DRIFT_PSI
from healgym.errors import ConfigError
from healgym.sim import rng as crng
from healgym.sim.episode import next_key, seed_key
from healgym.sim.model import (
    HEALTH,
    REPLICA_COST_PER_H,
    PipelineConfig,
    build_model,
    default_dataset,
    hops_from_edges,
)
from healgym.sim.replay import bounds

__all__ = ["PipelineHealEnv", "default_dataset", "hops_from_edges"]


class PipelineHealEnv(gym.Env[np.ndarray, np.int64]):
    """Heal an ML pipeline under chaos; its healthy behaviour is replayed from real telemetry.

    ## Description
    A pipeline of stages (default ``ingest -> features -> train -> serve -> deliver``) runs on a
    simulated clock (``step_seconds`` per step, default 10 s). Each stage's healthy metrics are
    replayed from a telemetry dataset (real logs, or the embedded seeded synthetic default).
    Chaos injects faults from a library of 18 types (infrastructure and ML), at random or from a
    scenario file; faults ramp up, fade or persist, spread downstream with a lag, and cascade.
    The agent sees what an operator sees, not the hidden faults, and acts: restart, scale,
    roll back, retrain, backfill, switch model, shed load, escalate. See ``docs/environment.md``.

    ## Action Space
    ``Discrete(3 * S + 8)`` (23 for 5 stages): noop; restart, scale_up, scale_down per stage;
    rollback, retrain, backfill, switch_light, switch_back, shed_load, escalate. Each has a
    duration, a cost, and a success probability per fault (the healing matrix,
    :mod:`healgym.sim.actions`). ``info["action_mask"]`` marks the actions possible now: one
    action at a time (only noop and escalate while one is in flight), replicas within [1, 8],
    rollback only with a previous version, the right model switch, no shedding while shedding,
    nothing costlier than the remaining budget. A masked action is treated as noop with a
    penalty.

    ## Observation Space
    ``Box(float32)`` of size ``7 * S + 11 + n_actions`` (M = 6 metrics), laid out by
    ``env.model.layout`` (:class:`healgym.sim.layout.ObsLayout`), the one place offsets are
    computed:

    | index | meaning | min | max |
    |---|---|---|---|
    | 0 .. 6S-1 | per stage and metric (stage-major): robust z vs healthy baseline | -50 | 50 |
    | 6S .. 7S-1 | replicas of each stage / 8 | 0 | 1 |
    | 7S | estimated model accuracy | 0 | 1 |
    | 7S+1 | drift KS statistic (features vs reference) | 0 | 1 |
    | 7S+2 | drift PSI | 0 | 10 |
    | 7S+3 | null rate | 0 | 1 |
    | 7S+4 | schema error rate | 0 | 1 |
    | 7S+5 | feature staleness, hours | 0 | 24 |
    | 7S+6 | running cost / baseline cost | 0 | 10 |
    | 7S+7 | time since the last action, hours | 0 | 1 |
    | 7S+8 | an action is in flight | 0 | 1 |
    | 7S+9 | serving the light model | 0 | 1 |
    | 7S+10 | a rollback target exists | 0 | 1 |
    | 7S+11 .. | the last action, one-hot | 0 | 1 |

    Ground truth (active faults, open incidents) is in ``info["faults"]`` and
    ``info["incidents"]``, for analysis only.

    ## Rewards
    ``-10`` per second of SLO violation, ``+100`` per incident resolved within 30 s of onset,
    minus each action's cost and the running cost above baseline; all configurable through
    ``reward`` and ``slo`` (:mod:`healgym.sim.reward`).

    ## Starting State
    A random offset into the telemetry, every stage at 2 replicas, the full model deployed with a
    previous version to roll back to, no faults active.

    ## Episode End
    No terminal state: a pipeline is never "done". The episode is truncated when its replayed
    window ends, after ``episode_steps`` steps (360 = 1 hour by default; the env's one time limit,
    the registration adds no ``TimeLimit``; ``time_limit=False``: it never ends);
    the final ``info["episode_metrics"]`` holds per-incident onset, detection, resolution
    (MTTR), downtime, uptime %, actions and their cost, and unresolved incidents.

    ## Arguments
    ``gymnasium.make("healgym/PipelineHeal-v1", dataset=None, stages=None, step_seconds=10,
    chaos=True, scenario=None, replay_incidents=False, reward=None, slo=None,
    healing_matrix=None, render_mode=None)``: the fields of
    :class:`healgym.sim.model.PipelineConfig` (one definition for both env classes and
    ``build_model``; pass a whole one as ``config=``), plus ``render_mode``. An unknown argument
    fails, naming the closest one.

    * ``dataset``: a dataset folder path or a ``TelemetryDataset``; None: embedded synthetic.
    * ``stages``: stage names (dataset entities), or ``{stage: entity}``; default: all.
    * ``chaos``: True, False, or a mapping (``rates``, ``rate_scale``, ``severity``, ``warmup_s``).
    * ``scenario``: a scenario YAML path or mapping (see :mod:`healgym.sim.chaos`); random arrivals
      are off under a scenario unless it says ``random_chaos: true``.
    * ``replay_incidents``: start episodes around the dataset's labelled fault windows and track
      them as incidents (the fault is in the real data; healing it splices healthy data in).
    * ``episode_steps``: the episode length in steps (the one time limit); ``time_limit=False``
      makes episodes that never end (replay and chaos planned ``episode_steps`` at a time).
    * ``extra_metrics``: per-stage metrics beyond the canonical six
      (:class:`healgym.telemetry.schema.MetricSpec` or mappings of its fields), replayed from the
      dataset's column of that name; they extend the observation's z block.
    * ``action_kinds``: a table of :class:`healgym.sim.actions.ActionKind` in place of the
      built-in one (each kind: target, duration, cost, mask rule, effect); heal with it through
      ``healing_matrix``. The observation's layout follows (:class:`healgym.sim.layout.ObsLayout`).
    * ``history``: add the history block to the observation (docs/environment.md, section 2).
    * ``label_lag_s``: labels arrive late: the accuracy estimate's lag, s (600; 0: none).
    * ``scrape_gap_p``: the chance a stage's scrape fails at a step, repeating its previous
      metrics (0.02; 0: never).
    * ``metric_lag_s``: the per-stage metrics an observation shows are this old, s (20, two
      steps; rounded to whole steps; 0: current). The SLO and the reward count the present.

    ## Version History
    * v1: no traps (issue 15): a bad release is a new model version, so rollback always has the
      last good one to go back to; shedding turns traffic away (lower throughput, charged as
      that share of an SLO violation) instead of adding errors; the fast-fix bonus is a recovery
      bonus falling linearly with the time to recovery (0 at ``recovery_horizon_s``), earned by
      actions only; an escalation in flight and load shedding are observed; running below the
      baseline cost earns nothing; scale_down costs 1. Then, still v1 (unreleased): ambiguity
      (docs/environment.md, section 4b): crash_loop is an exact look-alike of process_crash
      that a restart only relieves, the new leaky_release, a restart under a surge and a
      retrain during a drift's ramp heal nothing, labels arrive late, scrapes fail;
      ``since_deploy_h`` joined the context (72 observation values for 5 stages: exported RLlib
      policies that recorded the old layout are refused; Q-tables still load, their features
      are named, but were learned on other dynamics: retrain them, as the zoo was). Then the
      label-free proxy ``pred_shift`` joined the context (73 values for 5 stages), the
      slow_dependency fault (its loudest symptom downstream) joined the library, and the
      per-stage metrics arrive ``metric_lag_s`` late. Policies trained on v0 are refused.
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, config: PipelineConfig | None = None,
                 **pipeline: Any) -> None:
        """``pipeline``: the fields of :class:`healgym.sim.model.PipelineConfig` (see Arguments
        above), or all of them as ``config``."""
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode={render_mode!r} is not supported; use 'ansi' or None")
        self.render_mode = render_mode
        cfg = PipelineConfig.make(config, "PipelineHeal-v1", **pipeline)
        # The batch core with one pipeline (the vector env's own, with no Gymnasium around it).
        self.config = cfg
        self.model = m = build_model(cfg)
        self._core = BatchCore(m, num_envs=1, num_threads=1)
        self.observation_space = m.observation_space
        self.action_space = m.action_space
        self._started = False
        self._key = -1  # the episode key (-1: not drawn yet)
        self._fault_list: list[tuple[str, str]] = []
        self._fault_sig = (-1, -1)

    # Read-only views of the model, for users and tests.
    dataset_name = property(lambda self: self.model.dataset_name)
    replay = property(lambda self: self.model.replay)
    stages = property(lambda self: self.model.stages)
    n_stages = property(lambda self: self.model.n_stages)
    hops = property(lambda self: self.model.hops)
    dt = property(lambda self: self.model.dt)
    actions = property(lambda self: self.model.actions)
    action_names = property(lambda self: self.model.action_names)
    model_stage = property(lambda self: self.model.model_stage)
    reward_cfg = property(lambda self: self.model.reward)
    slo = property(lambda self: self.model.slo)
    healing = property(lambda self: self.model.healing)
    chaos = property(lambda self: self.model.chaos)
    scenario = property(lambda self: self.model.scenario)
    episode_steps = property(lambda self: self.model.episode_steps)

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            key = int(seed_key(seed))
        elif self._key >= 0:
            key = int(next_key(np.uint64(self._key)))
        else:
            key = crng.draw_key(self.np_random)
        self._key = key
        obs, _ = self._core.start(np.array([key], dtype=np.uint64), options)
        self._started = True
        return obs[0], self._info(final=False)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = int(action)
        if not 0 <= a < len(self.model.actions):
            raise gym.error.InvalidAction(
                f"action {action!r} is outside Discrete({len(self.model.actions)})")
        obs, reward, violated, invalid, truncated = self._core.advance(
            np.array([a], dtype=np.int64))
        # The episode's replayed window ends: truncation at episode_steps (the one time limit;
        # the registration adds no TimeLimit wrapper).
        final = bool(truncated[0])
        if final:
            self._started = False
        info = self._info(final=final)
        info["slo_violated"] = bool(violated[0])
        if invalid[0]:
            info["invalid_action"] = True
        return obs[0], float(reward[0]), False, final, info

    # ------------------------------------------------------------------ reporting
    def _info(self, final: bool) -> dict[str, Any]:
        c = self._core.state
        mask = c.actions.mask[0].copy()
        mask.flags.writeable = False  # a snapshot: later steps do not change it
        info: dict[str, Any] = {"action_mask": mask, "time_s": float(c.clock.t[0]),
                                "faults": self.faults}
        if final:
            info["episode_metrics"] = self.episode_metrics()
        return info

    @property
    def faults(self) -> list[tuple[str, str]]:
        """The active faults (type, stage) in onset order: the ground truth, for analysis."""
        sl = self._core.state.slots
        sig = (int(sl.next_uid[0]), int(sl.n[0]))  # slots change only by adding or removing
        if sig != self._fault_sig:
            self._fault_sig = sig
            self._fault_list = self._core.faults(0)
        return list(self._fault_list)

    def fault_states(self) -> list[dict[str, Any]]:
        """The active faults with their timing (:meth:`BatchCore.fault_states`): ground
        truth, for the oracle and analysis."""
        return self._core.fault_states(0)

    def action_masks(self) -> np.ndarray:
        """The current action mask (for maskable-policy libraries)."""
        return self._core.state.actions.mask[0].copy()

    def episode_metrics(self) -> dict[str, Any]:
        """Metrics of the episode so far: incidents with MTTR, downtime, uptime, actions."""
        return self._core.episode_metrics(0)

    def render(self) -> str | None:  # type: ignore[override]
        if self.render_mode != "ansi":
            return None
        from healgym.render import dashboard

        return dashboard(self)

    # ------------------------------------------------------------------ state, read-only
    time_s = property(lambda self: float(self._core.state.clock.t[0]),
                      doc="The simulated clock, seconds.")
    downtime_s = property(lambda self: float(self._core.state.pipeline.downtime[0]),
                          doc="Seconds of SLO violation this episode.")
    total_reward = property(lambda self: float(self._core.state.pipeline.total_reward[0]))
    replicas = property(lambda self: self._core.state.pipeline.replicas[0].astype(np.int64),
                        doc="Replicas per stage (a copy).")
    model_version = property(lambda self: int(self._core.state.pipeline.version[0]))
    light_model = property(lambda self: bool(self._core.state.pipeline.light[0]))
    last_action = property(lambda self: int(self._core.state.actions.last[0]))

    @property
    def in_flight(self) -> str | None:
        """The action in flight (escalation aside), or None."""
        a = int(self._core.state.actions.in_flight[0])
        return None if a < 0 else self.model.action_names[a]

    @property
    def _raw(self) -> np.ndarray:
        """Current raw metrics (S, M), from the last observation's unclipped z-scores (the
        step works in z-space: raw = z * scale + median)."""
        m = self.model
        z = self._core.last_z().reshape(m.n_stages, m.n_metrics)
        return np.clip(z / m.inv_scale + m.median, *bounds(m.metric_specs))

    @property
    def ml_health(self) -> dict[str, float]:
        """Current true ML health signals (the observation holds their estimates)."""
        c = self._core.state
        h = dict(zip(HEALTH, c.effects.ml_now[0].tolist(), strict=True))
        accuracy, null_rate, schema = h["accuracy"], h["null_rate"], h["schema_error_rate"]
        stale, shift, cost_mult = h["staleness_s"], h["covariate_shift"], h["cost_mult"]
        cost = float(c.pipeline.replicas[0].sum()) * REPLICA_COST_PER_H * cost_mult
        return {
            "accuracy": accuracy, "covariate_shift": shift, "null_rate": null_rate,
            "schema_error_rate": schema, "staleness_s": stale,
            "cost_factor": cost / self.model.base_cost,
            "drift_ks": float(c.pipeline.drift[0, DRIFT_KS]),
            "drift_psi": float(c.pipeline.drift[0, DRIFT_PSI]),
            "pred_shift": h["pred_shift"],
        }

    @property
    def raw_metrics(self) -> dict[str, dict[str, float]]:
        """The current raw (unnormalised) metrics per stage, for dashboards and analysis."""
        raw = self._raw
        return {s: {m: float(raw[i, j]) for j, m in enumerate(self.model.metrics)}
                for i, s in enumerate(self.stages)}
