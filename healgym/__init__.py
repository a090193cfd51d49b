"""healgym: learn how to heal production ML pipelines, in a simulator replayed from real telemetry.

``import healgym`` registers ``healgym/PipelineHeal-v1`` with Gymnasium.
"""

from __future__ import annotations

__version__ = "0.1.0"

from gymnasium.envs.registration import register, registry  # noqa: E402

ENV_ID = "healgym/PipelineHeal-v1"
DEFAULT_EPISODE_STEPS = 360

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="healgym.envs.pipeline_heal:PipelineHealEnv",
        vector_entry_point="healgym.envs.vector:PipelineHealVectorEnv",
        # no max_episode_steps: the env truncates itself at its one limit, episode_steps
    )

__all__ = ["DEFAULT_EPISODE_STEPS", "ENV_ID", "__version__"]
