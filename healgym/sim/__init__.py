"""The pipeline simulator: pure functions for faults, actions, drift, replay and episode metrics.

The environment (:mod:`healgym.envs.pipeline_heal`) is a thin stateful shell over these, so the
scalar env, a vector env and the serving adapter share one definition of the dynamics.
"""
