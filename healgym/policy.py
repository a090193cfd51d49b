"""The one interface every policy implements, and how a saved policy is found and loaded.

Evaluation, training loops, the serving adapter and the analysis tools use only this protocol:
given what an operator sees (the observation and ``info["action_mask"]``), return an action and
the reason for it.

Saved policies come in formats: a folder whose ``policy.json`` names its ``format``
(``healgym-qtable``, ``healgym-rlmodule``, ...) or a runbook YAML file. A format is one loader,
``load(path, model) -> Policy``, and one registry entry: :func:`register_format`, or an entry
point in the ``healgym.policy_formats`` group of any installed distribution (this project's own
agents register theirs in ``pyproject.toml``), so ``healgym`` itself never imports an agent's
code (a checked contract: ``make lint``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from healgym.errors import HealgymError, did_you_mean

ENTRY_POINTS = "healgym.policy_formats"
#: The format name a runbook YAML file loads under.
RUNBOOK_FORMAT = "runbook-yaml"


@dataclass(frozen=True)
class Decision:
    """An action and why: the rule that fired, the Q-values, or the fault the oracle saw."""

    action: int
    explanation: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """``decide(obs, info) -> Decision``; ``reset()`` at the start of each episode."""

    name: str

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision: ...

    def reset(self) -> None: ...


def valid_actions(info: dict[str, Any], n_actions: int) -> np.ndarray:
    mask = info.get("action_mask")
    return np.flatnonzero(mask) if mask is not None else np.arange(n_actions)


def run_episode(env: Any, policy: Policy, seed: int,
                options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One episode of ``policy`` on ``env``; returns its episode metrics."""
    obs, info = env.reset(seed=seed, options=options)
    policy.reset()
    while True:
        decision = policy.decide(obs, info)
        obs, reward, terminated, truncated, info = env.step(decision.action)
        if terminated or truncated:
            return info["episode_metrics"]  # type: ignore[no-any-return]


def read_versioned_json(path: Path, name: str, fmt: str, version: int, what: str, fix: str
                        ) -> dict[str, Any]:
    """``path/name`` (a saved policy's or dataset's metadata), refusing a folder without it or
    of another format or version; ``what`` names the artefact, ``fix`` says how to remake it."""
    try:
        meta: dict[str, Any] = json.loads((path / name).read_text())
    except FileNotFoundError as exc:
        raise HealgymError(f"{path}: not {what} ({name} missing); {fix}") from exc
    except json.JSONDecodeError as exc:
        raise HealgymError(f"{path / name}: not valid JSON ({exc}); {fix}") from exc
    if meta.get("format") != fmt or meta.get("format_version") != version:
        raise HealgymError(f"{path}/{name}: format {meta.get('format')!r} "
                           f"v{meta.get('format_version')!r} is not {fmt!r} v{version}; {fix}")
    return meta


# --------------------------------------------------------------------------- baselines
BASELINES = "healgym.baselines"


def baseline(name: str, env: Any) -> Policy:
    """A baseline policy by name (``oracle``, ``noop``, ``random``...) built for ``env``, from
    the ``healgym.baselines`` entry points (this project's ``agents`` package provides them)."""
    eps = {ep.name: ep for ep in entry_points(group=BASELINES)}
    if name not in eps:
        raise HealgymError(f"no baseline {name!r}.{did_you_mean(name, eps)} Installed: "
                           f"{sorted(eps)} (entry points {BASELINES!r})")
    return eps[name].load()(env)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- formats
Loader = Callable[[Path, Any], Policy]
_FORMATS: dict[str, Loader] = {}


def register_format(name: str, loader: Loader) -> None:
    """Register ``loader(path, model) -> Policy`` for saved policies of format ``name``."""
    _FORMATS[name] = loader


def formats() -> dict[str, Loader]:
    """Every known format: those registered in this process and the installed entry points."""
    found = dict(_FORMATS)
    for ep in entry_points(group=ENTRY_POINTS):
        if ep.name not in found:
            found[ep.name] = _lazy(ep)
    return found


def _lazy(ep: Any) -> Loader:
    def load(path: Path, model: Any) -> Policy:
        return ep.load()(path, model)  # type: ignore[no-any-return]

    return load


def policy_format(path: Path) -> str:
    """The format of the saved policy at ``path``."""
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return RUNBOOK_FORMAT
    meta = path / "policy.json"
    if not meta.is_file():
        raise HealgymError(f"{path}: not a runbook YAML or an exported policy folder "
                           "(policy.json missing); export one with experiments/train.py")
    try:
        fmt = json.loads(meta.read_text()).get("format")
    except json.JSONDecodeError as exc:
        raise HealgymError(f"{meta}: not valid JSON ({exc})") from exc
    return str(fmt)


def load_saved_policy(path: str | Path, model: Any) -> Policy:
    """Load the saved policy at ``path`` for the pipeline ``model`` (its own loader refuses a
    policy trained on another pipeline)."""
    path = Path(path)
    fmt = policy_format(path)
    known = formats()
    if fmt not in known:
        raise HealgymError(f"{path}: unknown policy format {fmt!r}.{did_you_mean(fmt, known)} "
                           f"Known formats: {sorted(known)}")
    return known[fmt](path, model)


__all__ = ["Decision", "Policy", "baseline", "load_saved_policy", "policy_format",
           "read_versioned_json", "register_format", "run_episode", "valid_actions"]


def registered_policy_dir(uri: str) -> Path:
    """The saved-policy folder of a registered MLflow model (``models:/NAME/VERSION`` or
    ``models:/NAME@ALIAS``, or a ``runs:/`` model URI), found from what the registry recorded:
    the model's ``MLmodel`` names the artifact ``policy``'s path (MLflow stores a logged folder
    under its own name, so the path is not always ``artifacts/policy``)."""
    import mlflow
    import yaml

    root = Path(mlflow.artifacts.download_artifacts(uri.rstrip("/")))
    try:
        meta = yaml.safe_load((root / "MLmodel").read_text())
    except FileNotFoundError:
        raise HealgymError(f"{uri}: not an MLflow model (no MLmodel file)") from None
    arts = ((meta.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}
    rel = (arts.get("policy") or {}).get("path")
    candidates = [root / rel] if rel else []
    candidates += sorted(p.parent for p in (root / "artifacts").glob("*/policy.json"))
    for c in candidates:
        if (c / "policy.json").is_file() or c.suffix in (".yaml", ".yml"):
            return c
    raise HealgymError(f"{uri}: the registered model has no saved policy (artifact 'policy' "
                       f"with a policy.json); it records {sorted(arts)}")


def masked_input(model_input: Any, n_actions: int) -> tuple[np.ndarray, np.ndarray]:
    """A pyfunc model's input as (obs (N, n), mask (N, A)). The action mask is required: a
    policy asked without it could answer with an action the pipeline cannot take."""
    if not isinstance(model_input, dict) or "action_mask" not in model_input:
        raise HealgymError(
            "predict needs {'obs': (N, n_obs), 'action_mask': (N, n_actions)}: without the mask "
            "(info['action_mask'] in the env; the adapter's mask when serving) the policy could "
            "pick an action that cannot run here")
    obs = np.atleast_2d(np.asarray(model_input["obs"], dtype=np.float32))
    mask = np.atleast_2d(np.asarray(model_input["action_mask"]))
    if mask.shape != (len(obs), n_actions):
        raise HealgymError(f"action_mask has shape {mask.shape}; expected ({len(obs)}, "
                           f"{n_actions}), one row of 0/1 per observation")
    return obs, mask
