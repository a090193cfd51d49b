"""``healgym report``, ``healgym export-offline``, ``healgym replay`` and
``healgym simulate-serving``: the analyst's commands (docs/analysis.md)."""

from __future__ import annotations

import argparse
import json
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


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("report", help="an HTML report (and CSVs) from a decision log")
    _add_filters(r)
    r.add_argument("--out", default="report.html", help="the HTML file to write")
    r.add_argument("--top", type=int, default=5, help="slowest incidents to show in full")
    r.set_defaults(func=report_cmd)
    _ = json  # used by the other commands
