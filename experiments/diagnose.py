"""Diagnosis as a task: train the learned diagnosers on simulated episodes and score every
diagnoser on held-out episodes, one table per distribution (issue 18, item 1).

    python experiments/diagnose.py [--train-episodes 300] [--episodes 100] [--window 6]
        [--dataset data/sample/dataset] [--scenario configs/scenarios/leak_cascade.yaml ...]
        [--out results/diagnose]
    python experiments/diagnose.py --real nezha ../shared/data/nezha/rca_data/2022-08-22 \
        --stages configs/telemetry/nezha_ob.yaml     # also the real labelled incidents

With ``--real FORMAT FOLDER`` the telemetry is that import (``healgym import``), its entities
bound to roles by the ``--stages`` preset, and a last table scores every diagnoser on the
dataset's labelled incidents in the evaluation range (replayed one per episode, chaos off):
trained on simulated faults, tested on real ones.

Training uses episode seeds from 0 on the first 70 % of the telemetry; evaluation uses seeds
from 10000 on the last 30 %, in-distribution random chaos and each scenario file reported
alone. Rows are labelled from the env's ground truth (agents/diagnosis.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402

import healgym  # noqa: E402
from agents.diagnosis import (  # noqa: E402
    BoostedDiagnoser,
    ForestDiagnoser,
    MajorityDiagnoser,
    SignatureDiagnoser,
    TreeDiagnoser,
    build_dataset,
    lookalikes,
    markdown,
    score,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-episodes", type=int, default=300)
    p.add_argument("--episodes", type=int, default=100, help="held-out, per distribution")
    p.add_argument("--window", type=int, default=6, help="observations per diagnosis")
    p.add_argument("--dataset", default=None, help="a telemetry dataset (default: embedded)")
    p.add_argument("--scenario", action="append", default=[],
                   help="a held-out scenario file (repeatable)")
    p.add_argument("--real", nargs=2, metavar=("FORMAT", "FOLDER"), default=None,
                   help="real labelled telemetry to import (e.g. nezha <day folder>)")
    p.add_argument("--stages", default=None,
                   help="a telemetry preset YAML whose 'stages' binds roles to entities")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "diagnose")
    args = p.parse_args(argv)
    kw: dict[str, object] = {} if args.dataset is None else {"dataset": args.dataset}
    if args.real:
        from healgym.telemetry.importers import import_source

        kw["dataset"] = import_source(args.real[0], Path(args.real[1]))
    if args.stages:
        import yaml

        kw["stages"] = yaml.safe_load(Path(args.stages).read_text())["stages"]

    def env(split: str):  # noqa: ANN202
        rng = (0.0, 0.7) if split == "train" else (0.7, 1.0)
        return lambda: gym.make(healgym.ENV_ID, time_range=rng, **kw)  # type: ignore[arg-type]

    t0 = time.perf_counter()
    train = build_dataset(env("train"), range(args.seed, args.seed + args.train_episodes),
                          args.window)
    model = env("eval")().unwrapped.model
    diagnosers = [MajorityDiagnoser().fit(train), TreeDiagnoser(seed=args.seed).fit(train),
                  BoostedDiagnoser(seed=args.seed).fit(train),
                  ForestDiagnoser(40, 8, seed=args.seed).fit(train), SignatureDiagnoser(model)]
    fit_s = time.perf_counter() - t0
    print(f"trained on {len(train)} labelled windows from {args.train_episodes} episodes "
          f"({fit_s:.0f} s)", file=sys.stderr)
    out: dict[str, dict[str, object]] = {}
    tables = []
    seeds = range(10_000, 10_000 + args.episodes)
    for scen in [None, *args.scenario, *(["real"] if args.real else [])]:
        options = None
        make = env("eval")
        if scen == "real":  # one labelled incident an episode, chaos off
            name = f"real labelled incidents ({args.real[0]})"

            def make():  # noqa: ANN202
                return gym.make(healgym.ENV_ID, time_range=(0.7, 1.0), replay_incidents=True,
                                chaos=False, **kw)
        else:
            name = "random chaos" if scen is None else Path(scen).stem
            options = None if scen is None else {"scenario": str(Path(scen).resolve())}
        data = build_dataset(make, seeds, args.window, options=options)
        if not len(data):
            tables.append(f"**{name}**: no labelled rows")
            continue
        res = {d.name: score(d, data) for d in diagnosers}
        out[name] = res
        tables.append(markdown(res, f"{name}: {args.episodes} held-out episodes"))
        best = max(res, key=lambda n: res[n]["top1"]["value"])  # type: ignore[index]
        pairs = lookalikes(res[best]["confusion"])  # type: ignore[arg-type]
        tables.append(f"look-alikes for {best} (true -> diagnosed, rows): " +
                      ", ".join(f"{t} -> {d} ({n})" for t, d, n in pairs[:6]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diagnosis.json").write_text(json.dumps(out, indent=2, default=float))
    text = "\n\n".join(tables)
    (args.out / "diagnosis.md").write_text(text + "\n")
    print(text)
    print(f"\nresults in {args.out}; took {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
