"""The adapter's own Prometheus metrics (a registry per adapter, served at /metrics/)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AdapterMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.decisions = Counter("healgym_decisions", "Decisions, by action and status",
                                 ["action", "status"], registry=r)
        self.overrides = Counter("healgym_overrides", "Human overrides", registry=r)
        self.guard_blocks = Counter("healgym_guard_blocks", "Actions blocked, by check",
                                    ["check"], registry=r)
        self.actuator_failures = Counter("healgym_actuator_failures",
                                         "Actuator failures, by action", ["action"], registry=r)
        self.pending = Gauge("healgym_pending_approvals", "Decisions awaiting a human",
                             registry=r)
        self.latency = Histogram("healgym_decision_latency_seconds",
                                 "Observation to guarded action", registry=r,
                                 buckets=(1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1, 5))
        self.recoveries = Histogram("healgym_time_to_recover_seconds",
                                    "Incident start to SLO healthy again", registry=r,
                                    buckets=(10, 30, 60, 120, 300, 600, 1200, 3600))
        self.alerts = Counter("healgym_alerts", "Alerts raised by the adapter, by reason",
                              ["reason"], registry=r)
