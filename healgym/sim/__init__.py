"""The pipeline simulator: the fault library and its compiled effects, actions, drift, replay,
episode draws and the static model.

The environment's compiled step (:mod:`healgym.envs._kernel`, run by the vector env; the scalar
env is a batch of one) and the serving adapter and analysis tools use these one definitions.
"""
