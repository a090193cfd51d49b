"""Promote a policy: move the ``champion`` alias to a registered version, or register a
training run's policy first (runs register only when asked: ``register=true``).

    python experiments/promote.py VERSION [--name healgym-qlearning] [--alias champion]
                                          [--tracking-uri URI]
    python experiments/promote.py --run RUN_ID [--name healgym-ppo] [--alias champion]
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
    p.add_argument("version", nargs="?", help="a registered version of --name")
    p.add_argument("--run", help="a training run whose 'policy' artifact to register first")
    p.add_argument("--name", default=MODEL_NAME)
    p.add_argument("--alias", default="champion")
    p.add_argument("--tracking-uri", default=None)
    args = p.parse_args(argv)
    if (args.version is None) == (args.run is None):
        p.error("give a VERSION or --run RUN_ID")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(args.tracking_uri))
    version = args.version
    if args.run:
        import tempfile

        from agents.registry import MODEL_CODE, RLLIB_MODEL_CODE, log_and_register

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(run_id=args.run,
                                                             artifact_path="policy",
                                                             dst_path=tmp))
            code = MODEL_CODE if args.name.endswith("qlearning") else RLLIB_MODEL_CODE
            with mlflow.start_run(run_id=args.run):
                version = log_and_register(local, args.name, code, alias=None)
        print(f"registered run {args.run}'s policy as models:/{args.name}/{version}")
    promote(version, args.name, args.alias)
    print(f"models:/{args.name}@{args.alias} -> version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
