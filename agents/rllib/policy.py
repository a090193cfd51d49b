"""A trained RLlib RLModule as a portable healgym policy, loaded without Ray.

:func:`export` writes a folder:

- ``weights.npz``: the inference-only module state (arrays only; loaded with
  ``allow_pickle=False``);
- ``policy.json``: format and version, the algorithm, the module's network config, the
  observation and action spaces, and what the policy was trained on: the env id and version,
  the stages, the action names and the observation layout (every observation index's signal
  name). :meth:`RLlibPolicy.load` refuses a policy whose env version, actions or observation
  layout differ from the pipeline it is asked to run on, naming the first difference;
- ``rl_module/``: RLlib's own checkpoint of the module, for Ray users
  (``RLModule.from_checkpoint``). It is a pickle: load it only from a source you trust.
  healgym itself never reads it.

:class:`RLlibPolicy` rebuilds the module from ``policy.json`` (the masking module class comes
from an allow-list, not from the file), loads the weights and calls ``forward_inference``: no
Ray cluster, no Ray workers. It implements :class:`agents.policy.Policy`, and returns only
actions the mask allows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from agents.policy import Decision, read_versioned_json
from healgym.errors import HealgymError

FORMAT = "healgym-rlmodule"
FORMAT_VERSION = 2  # 2: flat observation + mask modules
ENV_VERSION = "healgym/PipelineHeal-v1"


def observation_layout(model: Any) -> list[str]:
    """The name of every observation index (:func:`healgym.sim.signals.observation_names`)."""
    from healgym.sim.signals import observation_names

    return observation_names(model)


def export(module: Any, algo: str, model: Any, out: Path,
           extra: dict[str, Any] | None = None, ray_checkpoint: bool = True) -> Path:
    """Write the inference part of ``module`` (an RLlib RLModule) as a portable policy;
    ``ray_checkpoint=False`` leaves out RLlib's own (pickled) module checkpoint, as the zoo
    does: what is committed stays arrays and JSON."""
    import gymnasium as gym

    import healgym

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = module.get_state(inference_only=True)
    arrays: dict[str, Any] = {k: np.asarray(v) for k, v in state.items()}
    np.savez(out / "weights.npz", **arrays)
    n_actions = int(module.action_space.n)
    flat = module.observation_space
    obs_space = gym.spaces.Box(flat.low[:-n_actions], flat.high[:-n_actions], dtype=np.float32)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "algo": algo,
        "env": ENV_VERSION, "healgym_version": healgym.__version__,
        "model_config": dict(module.model_config or {}),
        "observation": {"shape": list(obs_space.shape), "low": obs_space.low.tolist(),
                        "high": obs_space.high.tolist(),
                        "layout": observation_layout(model)},
        "n_actions": int(module.action_space.n),
        "stages": list(model.stages), "action_names": list(model.action_names),
        **(extra or {}),
    }
    (out / "policy.json").write_text(json.dumps(meta, indent=2) + "\n")
    if ray_checkpoint:
        module.save_to_path(str((out / "rl_module").resolve()))
    return out


def read_meta(path: Path) -> dict[str, Any]:
    return read_versioned_json(path, "policy.json", FORMAT, FORMAT_VERSION,
                               "an exported RLlib policy",
                               "export one with experiments/train.py agent=ppo")


def check_compatible(meta: dict[str, Any], model: Any, where: str) -> None:
    """Fail loudly when the policy was trained on another env version, other actions or
    another observation layout than ``model``'s."""
    if meta.get("env") != ENV_VERSION:
        raise HealgymError(f"{where}: trained on {meta.get('env')!r}, this is {ENV_VERSION!r}; "
                           "retrain on this environment version")
    if meta["action_names"] != list(model.action_names):
        raise HealgymError(
            f"{where}: trained for actions {meta['action_names']} but this pipeline's actions "
            f"are {list(model.action_names)} (stages {list(model.stages)}); serve it on a "
            f"pipeline with stages {meta['stages']}")
    layout = observation_layout(model)
    trained = meta["observation"]["layout"]
    if trained != layout:
        if len(trained) != len(layout):
            detail = f"{len(trained)} observation values, this pipeline has {len(layout)}"
            with_h = any(n.startswith("last_done=") for n in trained)
            if with_h != any(n.startswith("last_done=") for n in layout):
                detail += (" (it was trained with the history block: set `history: true` in "
                           "the serve config, env.history=true in Hydra)" if with_h else
                           " (it was trained without the history block: history: false)")
        else:
            i = next(i for i, (a, b) in enumerate(zip(trained, layout, strict=True)) if a != b)
            detail = f"observation[{i}] was {trained[i]!r}, here it is {layout[i]!r}"
        raise HealgymError(f"{where}: observation layout differs: {detail}; retrain or serve "
                           "on the pipeline it was trained on")


def build_module(meta: dict[str, Any], weights: dict[str, np.ndarray]) -> Any:
    """The inference-only masking RLModule of ``meta["algo"]`` with ``weights``; no Ray."""
    import gymnasium as gym

    from agents.rllib.env import masked_space
    from agents.rllib.modules import module_class

    if meta["algo"] not in ("ppo", "dqn"):
        raise HealgymError(f"policy.json: algo {meta['algo']!r} is not 'ppo' or 'dqn'")
    import logging

    # Ray's own modules log deprecation notices on import and construction: not the user's
    # concern when loading a policy
    for name in ("ray", "ray.rllib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    o = meta["observation"]
    box = gym.spaces.Box(np.asarray(o["low"], dtype=np.float32),
                         np.asarray(o["high"], dtype=np.float32), dtype=np.float32)
    space = masked_space(box, int(meta["n_actions"]))
    module = module_class(meta["algo"])(
        observation_space=space, action_space=gym.spaces.Discrete(int(meta["n_actions"])),
        inference_only=True, model_config=dict(meta["model_config"]))
    try:
        module.set_state(weights)
    except (ValueError, RuntimeError) as exc:
        raise HealgymError(f"weights.npz does not fit the network in policy.json: {exc}"
                           ) from exc
    module.eval()
    return module


class RLlibPolicy:
    """An exported PPO or DQN policy; ``decide`` runs the RLModule's ``forward_inference``."""

    acts_in_batches = True  # ``act``: greedy actions for a batch (lockstep evaluation)

    def __init__(self, module: Any, meta: dict[str, Any]) -> None:
        self.module, self.meta = module, meta
        self.name = meta["algo"]
        self.action_names = meta["action_names"]

    @classmethod
    def load(cls, path: str | Path, model: Any | None = None) -> RLlibPolicy:
        """Load an exported policy; with ``model`` (the pipeline it will run on), refuse it
        unless env version, actions and observation layout match."""
        path = Path(path)
        meta = read_meta(path)
        if model is not None:
            check_compatible(meta, model, str(path))
        with np.load(path / "weights.npz", allow_pickle=False) as data:
            weights = {k: data[k] for k in data.files}
        return cls(build_module(meta, weights), meta)

    def reset(self) -> None:
        pass

    def scores(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Per-action scores, masked actions -inf: PPO's logits, DQN's Q-values. (N, A)."""
        import torch
        from ray.rllib.core.columns import Columns

        obs = np.atleast_2d(np.asarray(obs, dtype=np.float32))
        mask = np.atleast_2d(np.asarray(mask, dtype=np.float32))
        if obs.shape[1] != len(self.meta["observation"]["layout"]):
            raise HealgymError(f"observation has {obs.shape[1]} values, the policy expects "
                               f"{len(self.meta['observation']['layout'])}")
        batch = {Columns.OBS: torch.from_numpy(np.concatenate([obs, mask], axis=1))}
        with torch.no_grad():
            if self.name == "dqn":
                out = self.module.compute_q_values(batch)["qf_preds"]
            else:
                out = self.module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
        s = out.numpy().astype(np.float64)
        return np.where(mask > 0.5, s, -np.inf)

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Greedy valid actions for a batch."""
        return self.scores(obs, mask).argmax(axis=1)

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision:
        mask = np.asarray(info["action_mask"])
        s = self.scores(obs, mask)[0]
        a = int(s.argmax())
        top = np.argsort(-s)[:3]
        kind = "q" if self.name == "dqn" else "logit"
        explanation: dict[str, Any] = {kind: {self.action_names[i]: round(float(s[i]), 3)
                                              for i in top if np.isfinite(s[i])}}
        if self.name == "ppo":  # the policy's probability of the chosen action
            valid = s[np.isfinite(s)]
            explanation["confidence"] = float(1.0 / np.exp(valid - s[a]).sum())
        return Decision(a, explanation)
