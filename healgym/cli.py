"""The ``healgym`` command: data, serving and analysis. ``healgym COMMAND --help`` for each.

A user's mistake (a bad file, a missing token, an adapter that is not running) is one line on
stderr and exit code 2; ``--debug`` (or ``HEALGYM_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path

from healgym.errors import user_errors
from healgym.telemetry.importers.common import SOURCE_SIDECAR


def _import(args: argparse.Namespace) -> int:
    from healgym.telemetry.importers import import_source

    ds = import_source(args.format, args.src)
    ds.save(args.out)
    _describe(ds, Path(args.out))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from healgym.telemetry.synthetic import generate_synthetic

    ds = generate_synthetic(seed=args.seed, days=args.days, step_seconds=args.step)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame = ds.frame.copy()
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(out / "telemetry.csv", index=False, float_format="%.6g")
    # Importers carry this sidecar into the dataset's metadata: the data stays marked synthetic.
    (out / SOURCE_SIDECAR).write_text(json.dumps({"synthetic": True, **ds.metadata["source"]},
                                                 indent=2) + "\n")
    (out / "README.md").write_text(
        f"Synthetic pipeline telemetry from `healgym generate --seed {args.seed} --days "
        f"{args.days}`: canonical CSV layout; import it with\n"
        f"`healgym import canonical {out} --out DATASET_DIR`.\n")
    print(f"wrote {len(frame)} rows for {len(ds.stages)} stages to {out / 'telemetry.csv'}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from healgym.telemetry.dataset import load_dataset

    ds = load_dataset(args.dir)
    _describe(ds, Path(args.dir))
    return 0


def _describe(ds, where: Path) -> None:  # type: ignore[no-untyped-def]
    m = ds.metadata
    print(f"dataset {m.get('name')} at {where}  (format v{m.get('format_version')}, "
          f"{'synthetic' if m.get('synthetic') else 'real'})")
    print(f"  {m.get('rows')} rows, {len(m['stages'])} stages, step {m['step_seconds']} s, "
          f"{m.get('start')} .. {m.get('end')}")
    print(f"  fault windows: {m.get('fault_windows', len(ds.faults))}")
    for d in m.get("derived", []):
        print(f"  derived {d['metric']}: {d['note']}")
    print("  stages (the names `stages=` takes), the metrics each measured, and its span:")
    frame = ds.frame
    for stage in ds.stages:
        g = frame[frame["stage"] == stage]
        metrics = [c for c in m.get("metrics", []) if c in g and g[c].notna().any()]
        rows = g[g[metrics].notna().any(axis=1)] if metrics else g.iloc[:0]
        fmt = "%Y-%m-%d %H:%M"
        span = (f"{rows['timestamp'].min().strftime(fmt)} .. "
                f"{rows['timestamp'].max().strftime(fmt)} UTC, {len(rows)} rows"
                if len(rows) else "no measured rows")
        unmeasured = [c for c in m.get("metrics", []) if c not in metrics]
        print(f"    {stage}: {', '.join(metrics) or 'nothing'}"
              f"{'  (unmeasured: ' + ', '.join(unmeasured) + ')' if unmeasured else ''}; {span}")
    counts = Counter(q["kind"] for q in m.get("quirks", []))
    if counts:
        print("  quirks: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
        print("  (details in metadata.json)")


def _calibrate(args: argparse.Namespace) -> int:
    from healgym.telemetry.calibrate import calibrate, comparison_table, write
    from healgym.telemetry.dataset import load_dataset

    ds = load_dataset(args.dataset)
    if ds.faults.empty:
        from healgym.errors import ConfigError

        raise ConfigError(f"{args.dataset}: the dataset has no labelled fault windows to fit "
                          "(import one with a fault table: faults.csv, or a public dataset's "
                          "labels)")
    result = calibrate(ds, min_windows=args.min_windows)
    out = write(result, args.out)
    src = result["source"]
    print(f"fitted {len(result['faults'])} fault type(s) from {src['windows']} labelled windows "
          f"of {src['dataset']!r} ({src['untyped_windows']} untyped) into {out}:\n")
    print(comparison_table(result))
    print(f"\nuse it: gym.make(..., faults={str(out)!r}) or, in Hydra, env.faults={out}")
    return 0


def _faults(args: argparse.Namespace) -> int:
    from healgym.sim.faults import LIBRARY

    if args.markdown:
        from healgym.sim import tables

        print("## Fault library\n\n" + tables.fault_table() + "\n\n## Actions\n\n"
              + tables.action_table() + "\n\n## Healing matrix\n\n" + tables.healing_table()
              + "\n\n## Healing that depends on history and state\n\n"
              + tables.ambiguity_table())
        return 0
    for f in LIBRARY:
        print(f"{f.name:22s} {f.category:6s} {f.onset:18s} {f.course:36s} {f.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="healgym", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error (also HEALGYM_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import telemetry into a canonical dataset folder")
    imp.add_argument("format", help="nezha, petshop, nab, canonical, prometheus, or a YAML path")
    imp.add_argument("src", help="the source file or folder")
    imp.add_argument("--out", required=True, help="the dataset folder to write")
    imp.set_defaults(func=_import)
    gen = sub.add_parser("generate", help="write seeded synthetic telemetry as canonical CSV")
    gen.add_argument("--out", required=True, help="the folder to write telemetry.csv into")
    gen.add_argument("--seed", type=int, default=0, help="the generator's seed")
    gen.add_argument("--days", type=float, default=2.0, help="how many days of telemetry")
    gen.add_argument("--step", type=int, default=60, help="seconds between samples")
    gen.set_defaults(func=_generate)
    info = sub.add_parser("info", help="describe a dataset folder")
    info.add_argument("dir", help="the dataset folder")
    info.set_defaults(func=_info)
    cal = sub.add_parser("calibrate", help="fit fault signatures from a dataset's labelled "
                                           "incidents")
    cal.add_argument("dataset", help="an imported dataset folder with labelled fault windows")
    cal.add_argument("--out", required=True, help="the YAML file to write (faults.yaml)")
    cal.add_argument("--min-windows", type=int, default=3,
                     help="fit a fault type only from at least this many windows")
    cal.set_defaults(func=_calibrate)
    flt = sub.add_parser("faults", help="print the fault library")
    flt.add_argument("--markdown", action="store_true",
                     help="the fault, action and healing-matrix tables as Markdown")
    flt.set_defaults(func=_faults)
    from healgym.analysis.cli import add_parsers as analysis_parsers
    from healgym.serving.cli import add_parsers

    add_parsers(sub)
    analysis_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.debug:
        os.environ["HEALGYM_DEBUG"] = "1"
    try:
        return int(user_errors("healgym")(args.func)(args))
    except SystemExit as exc:  # a user's mistake, said in one line (user_errors)
        return int(exc.code) if isinstance(exc.code, int) else 2


if __name__ == "__main__":
    sys.exit(main())
