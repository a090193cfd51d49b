"""Markdown tables of the fault library, the healing matrix and the actions, generated from the
code so ``docs/environment.md`` cannot drift from it (a test compares them)."""

from __future__ import annotations

from healgym.sim.actions import DEFAULT_HEALING, KINDS
from healgym.sim.faults import LIBRARY, FaultSpec


def _signature(f: FaultSpec) -> str:
    parts = [f"{m} x{1 + v:g}" for m, v in f.mult.items()]
    parts += [f"{m} {v:+g}" for m, v in f.add.items()]
    parts += [f"{m} {v:+g}" for m, v in f.ml.items()]
    return "; ".join(parts)


def fault_table() -> str:
    rows = ["| fault | kind | preferred stages | signature at severity 1 | onset | natural course "
            "| spreads downstream | cascades |", "|---|---|---|---|---|---|---|---|"]
    for f in LIBRARY:
        spread = [m for m in f.propagate_metrics if m not in f.downstream_mult
                  and m not in f.downstream_add]
        spread += [f"{m} x{1 + v:g}" for m, v in f.downstream_mult.items()]
        spread += [f"{m} {v:+g}" for m, v in f.downstream_add.items()]
        sep = "; " if f.downstream_mult or f.downstream_add else " "
        prop = (f"{', '.join(spread)}{sep}x{f.propagate:g}/hop after {f.hop_lag_s:g} s"
                if f.propagate and spread else "-")
        cascade = f"{f.cascade[0]} after {f.cascade[1]:g} s" if f.cascade else "-"
        stages = ", ".join(f.stages) if len(f.stages) < 5 else "any"
        rows.append(f"| `{f.name}` | {f.category} | {stages} | {_signature(f)} | {f.onset} | "
                    f"{f.course} | {prop} | {cascade} |")
    return "\n".join(rows)


def healing_table() -> str:
    kinds = [k.name for k in KINDS if k.name != "noop"]
    rows = ["| fault | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for name in [*(f.name for f in LIBRARY), "unknown"]:
        row = DEFAULT_HEALING.get(name, {})
        rows.append(f"| `{name}` | " + " | ".join(f"{row[k]:g}" if k in row else "."
                                                  for k in kinds) + " |")
    return "\n".join(rows)


def ambiguity_table() -> str:
    """The faults whose healing depends on history or state (FaultSpec.relieved_by,
    relapse_s, heals_after_ramp, blocks)."""
    rows = ["| fault | only relieved by (symptom back after) | heals only after its ramp | "
            "makes fail on its stage |", "|---|---|---|---|"]
    for f in LIBRARY:
        if not (f.relieved_by or f.heals_after_ramp or f.blocks):
            continue
        relieved = (f"{', '.join(f.relieved_by)} ({f.relapse_s:g} s, ramping again)"
                    if f.relieved_by else "-")
        after = (f"{', '.join(f.heals_after_ramp)} (ramp {f.ramp_s:g} s)"
                 if f.heals_after_ramp else "-")
        rows.append(f"| `{f.name}` | {relieved} | {after} | {', '.join(f.blocks) or '-'} |")
    return "\n".join(rows)


def action_table() -> str:
    rows = ["| action | per stage | duration s | cost | what it does |", "|---|---|---|---|---|"]
    for k in KINDS:
        rows.append(f"| `{k.name}` | {'yes' if k.per_stage else 'no'} | {k.duration_s:g} | "
                    f"{k.cost:g} | {k.description} |")
    return "\n".join(rows)
