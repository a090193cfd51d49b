"""Gymnasium environments."""

from healgym.envs.pipeline_heal import PipelineHealEnv

__all__ = ["PipelineHealEnv"]
