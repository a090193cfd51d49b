"""A text dashboard of the pipeline, as an on-call engineer would glance at it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from healgym.envs.pipeline_heal import PipelineHealEnv

_SHORT = {"latency_p95_ms": "p95 ms", "error_rate": "err %", "cpu_pct": "cpu %",
          "memory_pct": "mem %", "throughput_rps": "rps", "queue_depth": "queue"}


def dashboard(env: PipelineHealEnv) -> str:
    """Render the current state: per-stage metrics with z-score flags, ML health, alarms."""
    raw = env._raw
    z = (raw - env.model.median) * env.model.inv_scale
    replicas = env.replicas
    width = max(8, *(len(s) for s in env.stages))
    lines = [f"healgym | t={env.time_s:7.0f}s | dataset {env.dataset_name} | "
             f"downtime {env.downtime_s:.0f}s | reward {env.total_reward:9.1f}"]
    names = "".join(f"{_SHORT.get(m, m[:10]):>11}" for m in env.model.metrics)
    header = "stage".ljust(width) + names + "  repl"
    lines += [header, "-" * len(header)]
    for i, stage in enumerate(env.stages):
        cells = []
        for j, m in enumerate(env.model.metrics):
            v = raw[i, j] * (100.0 if m == "error_rate" else 1.0)
            flag = "!" if abs(z[i, j]) > 6 else " "
            cells.append(f"{v:10.1f}{flag}")
        lines.append(stage.ljust(width) + "".join(cells) + f"  {replicas[i]:4d}")
    ml = env.ml_health
    lines.append(f"model: accuracy {ml['accuracy']:.3f}  drift KS {ml['drift_ks']:.3f} "
                 f"PSI {ml['drift_psi']:.3f}  {'LIGHT' if env.light_model else 'full'} model "
                 f"v{env.model_version}  cost {ml['cost_factor'] * env.model.base_cost:.1f}/h")
    lines.append(f"last action: {env.action_names[env.last_action]}  "
                 f"in flight: {env.in_flight or '-'}")
    open_inc = [i for i in env.episode_metrics()["incidents"] if i["resolved_s"] is None]
    lines.append(f"open incidents: {len(open_inc)}  (ground truth: "
                 + (", ".join(f"{i['fault']}@{i['stage']}" for i in open_inc) or "none") + ")")
    return "\n".join(lines) + "\n"
