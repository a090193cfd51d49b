"""A text dashboard of the pipeline, as an on-call engineer would glance at it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from healgym.sim.faults import METRICS

if TYPE_CHECKING:
    from healgym.envs.pipeline_heal import PipelineHealEnv

_SHORT = {"latency_p95_ms": "p95 ms", "error_rate": "err %", "cpu_pct": "cpu %",
          "memory_pct": "mem %", "throughput_rps": "rps", "queue_depth": "queue"}


def dashboard(env: PipelineHealEnv) -> str:
    """Render the current state: per-stage metrics with z-score flags, ML health, alarms."""
    raw = env._raw
    z = (raw - env.model.median) * env.model.inv_scale
    width = max(8, *(len(s) for s in env.stages))
    lines = [f"healgym | t={env._t:7.0f}s | dataset {env.dataset_name} | "
             f"downtime {env._downtime_s:.0f}s | reward {env._total_reward:9.1f}"]
    header = "stage".ljust(width) + "".join(f"{_SHORT[m]:>11}" for m in METRICS) + "  repl"
    lines += [header, "-" * len(header)]
    for i, stage in enumerate(env.stages):
        cells = []
        for j, m in enumerate(METRICS):
            v = raw[i, j] * (100.0 if m == "error_rate" else 1.0)
            flag = "!" if abs(z[i, j]) > 6 else " "
            cells.append(f"{v:10.1f}{flag}")
        lines.append(stage.ljust(width) + "".join(cells) + f"  {env._replicas[i]:4d}")
    ks, psi = env._drift
    lines.append(f"model: accuracy {env._accuracy:.3f}  drift KS {ks:.3f} PSI {psi:.3f}  "
                 f"{'LIGHT' if env._light else 'full'} model v{env._model_version}  "
                 f"cost {env._cost_rate:.1f}/h")
    flight = env._in_flight.name if env._in_flight is not None else "-"
    lines.append(f"last action: {env.action_names[env._last_action]}  in flight: {flight}")
    open_inc = [i for i in env._incidents if i.resolved_s is None]
    lines.append(f"open incidents: {len(open_inc)}  (ground truth: "
                 + (", ".join(f"{i.fault}@{i.stage}" for i in open_inc) or "none") + ")")
    return "\n".join(lines) + "\n"
