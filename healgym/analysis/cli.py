"""``healgym report``, ``healgym export-offline``, ``healgym replay`` and
``healgym simulate-serving``: the analyst's commands (docs/analysis.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _filters(args: argparse.Namespace) -> Any:
    from healgym.analysis.log import Filters, parse_time

    return Filters(since=parse_time(args.since, "--since"), until=parse_time(args.until,
                                                                             "--until"),
                   policy_version=args.policy_version, target=args.target)


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", required=True,
                   help="the decision log: a SQLite file or a database URL")
    p.add_argument("--since", help="ISO date/time (UTC) or unix seconds, inclusive")
    p.add_argument("--until", help="ISO date/time (UTC) or unix seconds, exclusive")
    p.add_argument("--policy-version", help="only decisions of this policy version")
    p.add_argument("--target", help="only actions on this stage (or 'pipeline')")


def report_cmd(args: argparse.Namespace) -> int:
    from healgym.analysis.report import write_report

    r = write_report(args.log, args.out, _filters(args), top=args.top)
    s = r.summary
    print(f"report {r.html} (figures as CSV in {r.data_dir}/): {s['decisions']} decisions, "
          f"{s['executed_actions']} actions, {s['incidents']} incidents "
          f"({s['resolved']} resolved), {s['overrides']} overrides")
    if not s["decisions"]:
        print("healgym report: no decisions in this log with these filters", file=sys.stderr)
    for p in r.problems[:10]:
        print(f"healgym report: warning: {p}", file=sys.stderr)
    if len(r.problems) > 10:
        print(f"healgym report: warning: and {len(r.problems) - 10} more problems (see "
              f"{r.data_dir / 'summary.json'})", file=sys.stderr)
    return 0


def _pipeline(args: argparse.Namespace) -> tuple[str | None, list[str] | None]:
    """The dataset and stages the log was served on: flags, else the serve config's."""
    dataset, stages = args.dataset, args.stages.split(",") if args.stages else None
    if args.config:
        from healgym.serving.config import load_config

        conf = load_config(args.config)
        dataset, stages = dataset or conf.dataset, stages or conf.stages
    return dataset, stages


def _model(args: argparse.Namespace) -> Any:
    from healgym.sim.model import build_model

    dataset, stages = _pipeline(args)
    return build_model(dataset=dataset, stages=stages)


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="the serve config the log was written with (its dataset "
                   "and stages)")
    p.add_argument("--dataset", help="the telemetry dataset the policy was trained on")
    p.add_argument("--stages", help="comma-separated stages, as in training")


def export_cmd(args: argparse.Namespace) -> int:
    from healgym.analysis.log import load_log
    from healgym.analysis.offline import export_offline_dataset, transitions_from_log

    model = _model(args)
    filters = _filters(args)
    frames = load_log(args.log, filters)
    tr = transitions_from_log(frames, model, trust=args.trust)
    out = export_offline_dataset(tr, model, args.out, source=frames.source,
                                 filters=filters.describe())
    print(f"wrote {len(tr)} transitions ({int(tr.demo.sum())} human demonstrations) to "
          f"{out}/data; train RLlib BC or MARWIL on it (docs/analysis.md)")
    return 0


def simulate_cmd(args: argparse.Namespace) -> int:
    from healgym.envs.pipeline_heal import PipelineHealEnv
    from healgym.serving.decision_log import DecisionLog
    from healgym.serving.policies import load_policy
    from healgym.serving.sim import OracleOperator, simulate_serving

    env = PipelineHealEnv(dataset=args.dataset, stages=args.stages.split(",")
                          if args.stages else None, episode_steps=args.episode_steps)
    policy, version = load_policy(args.policy, env.model)
    log = DecisionLog(args.out if "://" in args.out else f"sqlite:///{args.out}")
    op = OracleOperator(env, name=args.operator_name) if args.operator == "oracle" else None
    import time as _time

    start = _time.time() if args.start is None else float(args.start)
    for i in range(args.episodes):
        opts = {"scenario": args.scenario} if args.scenario else None
        r = simulate_serving(env, policy, log, seed=args.seed + i, options=opts, operator=op,
                             start=start + i * (args.episode_steps + 10) * env.model.dt,
                             policy_version=version)
        m = r["episode_metrics"] or {}
        print(f"episode {i} (seed {args.seed + i}): {r['decisions']} decisions, uptime "
              f"{m.get('uptime_pct', float('nan')):.1f} %")
    if op is not None:
        print(f"{op.overrides} overrides by {args.operator_name}")
    print(f"decision log: {log.url}; next: healgym report --log {args.out} --out report.html")
    return 0


def replay_cmd(args: argparse.Namespace) -> int:
    import pandas as pd

    from healgym.analysis.log import load_log
    from healgym.analysis.replay import replay_incidents, what_if, write_scenarios

    model = _model(args)
    frames = load_log(args.log, _filters(args))
    replayed = replay_incidents(frames, model)
    if not replayed:
        print(f"healgym replay: no incidents with observations in {frames.source} "
              f"(filters: {frames.filters.describe()})", file=sys.stderr)
        return 0
    paths = write_scenarios(replayed, args.out)
    print(f"{len(paths)} incidents replayed as scenarios in {args.out}/")
    table: Any = pd.DataFrame([{"incident": r.incident_id[:8], "fault": r.diagnosis.fault,
                                "stage": r.diagnosis.stage, "match": r.diagnosis.score,
                                "recorded_ttr_s": r.recorded_ttr_s,
                                "recorded_actions": r.recorded_actions} for r in replayed])
    if args.policy:
        from healgym.envs.pipeline_heal import PipelineHealEnv
        from healgym.serving.policies import load_policy

        policy, version = load_policy(args.policy, model)
        dataset, stages = _pipeline(args)

        def make_env(steps: int) -> Any:
            return PipelineHealEnv(dataset=dataset, stages=stages, episode_steps=steps)

        table = what_if(replayed, policy, make_env, range(args.seed, args.seed + args.episodes))
        table.to_csv(f"{args.out}/what_if.csv", index=False)
        print(f"what {args.policy} ({version}) does on them, {args.episodes} seeds each "
              f"(also in {args.out}/what_if.csv):")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
    return 0


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("report", help="an HTML report (and CSVs) from a decision log")
    _add_filters(r)
    r.add_argument("--out", default="report.html", help="the HTML file to write")
    r.add_argument("--top", type=int, default=5, help="slowest incidents to show in full")
    r.set_defaults(func=report_cmd)
    e = sub.add_parser("export-offline",
                       help="a decision log as an offline RL dataset (Parquet, for RLlib)")
    _add_filters(e)
    _add_model(e)
    e.add_argument("--out", required=True, help="a new folder")
    e.add_argument("--trust", default="resolved", choices=["resolved", "all", "none"],
                   help="which human verdicts count as demonstrations")
    e.set_defaults(func=export_cmd)
    s = sub.add_parser("simulate-serving", help="serve a policy against the simulator, "
                       "writing a decision log (optionally with an oracle operator)")
    s.add_argument("--policy", required=True,
                   help="a policy folder, a runbook YAML or models:/NAME@ALIAS")
    s.add_argument("--out", required=True, help="the decision log (SQLite file or URL)")
    s.add_argument("--episodes", type=int, default=3, help="episodes to serve")
    s.add_argument("--episode-steps", type=int, default=360,
                   help="steps per episode (10 s each)")
    s.add_argument("--scenario", help="a scenario YAML (default: random chaos)")
    s.add_argument("--seed", type=int, default=0, help="the first episode's seed")
    s.add_argument("--start", help="unix time of the first decision (default: now)")
    s.add_argument("--operator", choices=["oracle", "none"], default="oracle",
                   help="a simulated human who overrides with the oracle's action, or none")
    s.add_argument("--operator-name", default="oracle-operator",
                   help="the operator name logged with its verdicts")
    s.add_argument("--dataset", help="the telemetry dataset folder (default: embedded)")
    s.add_argument("--stages", help="comma-separated stages, as in training")
    s.set_defaults(func=simulate_cmd)
    p = sub.add_parser("replay", help="replay a decision log's incidents as scenarios; with "
                       "--policy, what that policy does on each")
    _add_filters(p)
    _add_model(p)
    p.add_argument("--out", default="replayed", help="folder for the scenario YAMLs")
    p.add_argument("--policy", help="a policy folder, a runbook YAML or models:/NAME@ALIAS")
    p.add_argument("--episodes", type=int, default=5, help="seeds per incident")
    p.add_argument("--seed", type=int, default=10_000, help="the first seed")
    p.set_defaults(func=replay_cmd)
