"""Diagnosis as a task: train the learned diagnosers on simulated episodes and score every
diagnoser on held-out episodes, one table per distribution (issue 18, item 1).

    python experiments/diagnose.py [--train-episodes 300] [--episodes 100] [--window 6]
        [--dataset data/sample/dataset] [--scenario configs/scenarios/leak_cascade.yaml ...]
        [--out results/diagnose]

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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "diagnose")
    args = p.parse_args(argv)
    kw = {} if args.dataset is None else {"dataset": args.dataset}

    def env(split: str):  # noqa: ANN202
        rng = (0.0, 0.7) if split == "train" else (0.7, 1.0)
        return lambda: gym.make(healgym.ENV_ID, time_range=rng, **kw)

    t0 = time.perf_counter()
    train = build_dataset(env("train"), range(args.seed, args.seed + args.train_episodes),
                          args.window)
    model = env("eval")().unwrapped.model
    diagnosers = [MajorityDiagnoser().fit(train), TreeDiagnoser(seed=args.seed).fit(train),
                  BoostedDiagnoser(seed=args.seed).fit(train), SignatureDiagnoser(model)]
    fit_s = time.perf_counter() - t0
    print(f"trained on {len(train)} labelled windows from {args.train_episodes} episodes "
          f"({fit_s:.0f} s)", file=sys.stderr)
    out: dict[str, dict[str, object]] = {}
    tables = []
    seeds = range(10_000, 10_000 + args.episodes)
    for scen in [None, *args.scenario]:
        name = "random chaos" if scen is None else Path(scen).stem
        options = None if scen is None else {"scenario": str(Path(scen).resolve())}
        data = build_dataset(env("eval"), seeds, args.window, options=options)
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
