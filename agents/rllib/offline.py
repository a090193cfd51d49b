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
                   beta: float = 1.0, seed: int = 0, masked: bool = False) -> Any:
    """A ``BCConfig`` or ``MARWILConfig`` reading the dataset folder (``beta``: MARWIL's
    advantage weighting; 0 is BC). ``masked``: train healgym's action-masking PPO module on the
    observations with their masks appended (``data_masked``), so the result never picks a masked
    action and exports with :func:`export_offline_policy` as a servable policy."""
    import ray

    meta = load_offline_metadata(dataset)
    n = int(meta["action_space"]["n"])
    obs_space: gym.spaces.Box = gym.spaces.Box(-np.inf, np.inf,
                                               tuple(meta["observation_space"]["shape"]),
                                               np.float32)
    act_space: gym.spaces.Discrete = gym.spaces.Discrete(n)
    folder = "data"
    if masked:
        from agents.rllib.env import masked_space

        obs_space, folder = masked_space(obs_space, n), "data_masked"
        if not (Path(dataset) / folder).is_dir():
            raise HealgymError(f"{dataset}: no data_masked/ (exported by an older healgym); "
                               "export the log again")
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
            .offline_data(input_=[str(Path(dataset).resolve() / folder)],
                          input_read_method="read_parquet", dataset_num_iters_per_learner=1,
                          map_batches_kwargs={"compute": ray.data.ActorPoolStrategy(size=1)},
                          iter_batches_kwargs={"prefetch_batches": 1})
            .training(train_batch_size_per_learner=batch_size, lr=lr)
            .rl_module(**_module_kwargs(masked, hidden or [64, 64]))
            .learners(num_learners=0)
            .debugging(seed=seed))


def _module_kwargs(masked: bool, hidden: list[int]) -> dict[str, Any]:
    model_config = {"fcnet_hiddens": hidden, "fcnet_activation": "relu"}
    if not masked:
        return {"model_config": {"fcnet_hiddens": hidden}}
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from agents.rllib.modules import ActionMaskingPPOTorchRLModule

    return {"rl_module_spec": RLModuleSpec(module_class=ActionMaskingPPOTorchRLModule,
                                           model_config=model_config)}


def export_offline_policy(algo: Any, dataset: str | Path, model: Any, out: str | Path,
                          algo_name: str = "bc") -> Path:
    """The module of an offline algorithm trained with ``masked=True`` as a healgym policy
    folder (``healgym serve --policy``, ``experiments/evaluate.py ppo_path=``)."""
    from agents.rllib.modules import ActionMaskingPPOTorchRLModule
    from agents.rllib.policy import export

    module = learner_module(algo)
    if not isinstance(module, ActionMaskingPPOTorchRLModule):
        raise HealgymError("export_offline_policy needs a module trained with "
                           "offline_config(..., masked=True)")
    return export(module, "ppo", model, Path(out), extra={
        "trained_offline": {"algorithm": algo_name, "dataset": str(dataset)}})


def learner_module(algo: Any) -> Any:
    """The trained RLModule (offline algorithms have no env runners to ask)."""
    return algo.learner_group._learner.module["default_policy"]
