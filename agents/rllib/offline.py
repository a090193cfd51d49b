"""RLlib's BC and MARWIL on an offline dataset exported from a decision log.

    from agents.rllib.offline import offline_config
    algo = offline_config("results/offline/v1", algo="bc").build_algo()
    for _ in range(50):
        algo.train()
    module = learner_module(algo)  # an RLModule: module.forward_inference({"obs": ...})

The observation is the flat healgym observation (the dataset's ``metadata.json`` gives its size
and layout); the modules are RLlib's defaults for a Box observation and a Discrete action.
On 2 CPUs RLlib's offline pipeline deadlocks unless the pre-learner runs on a one-actor pool,
which this config sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.offline import load_offline_metadata
from healgym.errors import HealgymError


def offline_config(dataset: str | Path, algo: str = "bc", lr: float = 1e-3,
                   batch_size: int = 256, hidden: list[int] | None = None,
                   beta: float = 1.0, seed: int = 0) -> Any:
    """A ``BCConfig`` or ``MARWILConfig`` reading the dataset folder (``beta``: MARWIL's
    advantage weighting; 0 is BC)."""
    import ray

    meta = load_offline_metadata(dataset)
    obs_space = gym.spaces.Box(-np.inf, np.inf, tuple(meta["observation_space"]["shape"]),
                               np.float32)
    act_space: gym.spaces.Discrete = gym.spaces.Discrete(int(meta["action_space"]["n"]))
    if algo == "bc":
        from ray.rllib.algorithms.bc import BCConfig

        cfg: Any = BCConfig()
    elif algo == "marwil":
        from ray.rllib.algorithms.marwil import MARWILConfig

        cfg = MARWILConfig().training(beta=beta)
    else:
        raise HealgymError(f"algo={algo!r}: RLlib trains discrete-action policies offline with "
                           "'bc' or 'marwil'")
    return (cfg.environment(observation_space=obs_space, action_space=act_space)
            .offline_data(input_=[str(Path(dataset).resolve() / "data")],
                          input_read_method="read_parquet", dataset_num_iters_per_learner=1,
                          map_batches_kwargs={"compute": ray.data.ActorPoolStrategy(size=1)},
                          iter_batches_kwargs={"prefetch_batches": 1})
            .training(train_batch_size_per_learner=batch_size, lr=lr)
            .rl_module(model_config={"fcnet_hiddens": hidden or [64, 64]})
            .learners(num_learners=0)
            .debugging(seed=seed))


def learner_module(algo: Any) -> Any:
    """The trained RLModule (offline algorithms have no env runners to ask)."""
    return algo.learner_group._learner.module["default_policy"]
