"""Promote a registered policy version: move the ``champion`` alias to it.

    python experiments/promote.py VERSION [--name healgym-qlearning] [--alias champion]
                                          [--tracking-uri URI]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.registry import MODEL_NAME, promote  # noqa: E402
from agents.tracking import tracking_uri  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("version")
    p.add_argument("--name", default=MODEL_NAME)
    p.add_argument("--alias", default="champion")
    p.add_argument("--tracking-uri", default=None)
    args = p.parse_args(argv)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(args.tracking_uri))
    promote(args.version, args.name, args.alias)
    print(f"models:/{args.name}@{args.alias} -> version {args.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
