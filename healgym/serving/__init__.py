"""The policy-serving adapter: run a trained policy against real infrastructure.

observe (:mod:`.observe`: Prometheus or /metrics scrapes, encoded with the env's own functions)
-> decide (any :class:`agents.policy.Policy`) -> guard (:mod:`.guardrails`) -> human
(:mod:`.api`: approve, reject, override) -> act (:mod:`.actuators`) -> verify; every step in the
durable decision log (:mod:`.decision_log`). The loop is :class:`.adapter.Adapter`; its settings
are :class:`.config.ServeConfig` (a YAML file). See docs/serving.md.
"""
