"""Diagnose, then heal (issue 18): specialist policies, one per failure family, behind a router
that hands control to a specialist from the diagnosis. The composite is one :class:`Policy`.

* The **router** keeps the last ``window`` observations, diagnoses them with a
  :class:`~agents.diagnosis.TreeEnsemble` (extremely randomised trees over fault@stage classes
  and ``healthy``), sums the class probabilities per family, and routes to the family with
  the most. A family takes over after it leads ``switch_after`` steps in a row (the hand-over
  when a diagnosis changes mid-incident: a crash that turns out to be a crash loop), so one
  noisy step does not bounce control between specialists. Into and out of ``healthy`` control
  moves at once.
* ``healthy`` leading: no incident, the safe default (noop).
* The leading family's score under ``min_confidence``: ``low_confidence`` says what happens:
  ``escalate`` (page a human: the env's escalate action when the mask allows it, else noop),
  ``safe_default`` (noop) or ``specialist`` (the leading family's specialist anyway). Served,
  the score is also the decision's ``confidence``, which the guard's confidence check reads.
* **Specialists** are saved policies of any format (Q-tables, RLlib modules), each trained on
  episodes of its family's faults only (:func:`family_chaos`).

Saved as one folder, pickle-free: ``policy.json`` (format ``healgym-routed``: families, router
settings, what it was trained on), ``diagnoser.npz`` (the forest's arrays) and
``specialists/<family>/`` (each specialist's own saved folder, loaded by its own loader, which
refuses another pipeline as the composite's loader does).

A decision's explanation names the diagnosis (fault, stage, score), the family and its score,
the specialist in control, whether control just passed to it, and the specialist's own
explanation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.diagnosis import FAMILY, HEALTHY, TreeEnsemble, rank_proba
from agents.policy import Decision, read_versioned_json
from healgym.errors import ConfigError, HealgymError
from healgym.sim.faults import BY_NAME, LIBRARY

FORMAT = "healgym-routed"
FORMAT_VERSION = 1
ENV_VERSION = "healgym/PipelineHeal-v1"
LOW_CONFIDENCE = ("escalate", "safe_default", "specialist")


def default_families() -> dict[str, list[str]]:
    """infra / model / data: the fault library's categories ("ml" named "model")."""
    out: dict[str, list[str]] = {}
    for f in LIBRARY:
        out.setdefault(FAMILY[f.name], []).append(f.name)
    return out


def check_families(families: dict[str, Any], where: str = "agent.families"
                   ) -> dict[str, list[str]]:
    """Validate a {family: [fault, ...]} mapping: known faults, each in one family, every
    library fault covered (an uncovered fault would have no specialist)."""
    from healgym.errors import did_you_mean

    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for fam, faults in families.items():
        if str(fam) == HEALTHY:
            raise ConfigError(f"{where}: {HEALTHY!r} is the router's no-incident label; "
                              "name the family otherwise")
        if isinstance(faults, str) or not faults:
            raise ConfigError(f"{where}.{fam} = {faults!r}: expected a non-empty list of "
                              "fault types")
        for f in faults:
            if f not in BY_NAME:
                raise ConfigError(f"{where}.{fam}: unknown fault {f!r}."
                                  f"{did_you_mean(str(f), list(BY_NAME))}")
            if f in seen:
                raise ConfigError(f"{where}: fault {f!r} is in both {seen[f]!r} and {fam!r}; "
                                  "give each fault one family")
            seen[f] = str(fam)
        out[str(fam)] = [str(f) for f in faults]
    missing = [f.name for f in LIBRARY if f.name not in seen]
    if missing:
        raise ConfigError(f"{where}: faults {missing} are in no family; add them to one (every "
                          "fault needs a specialist)")
    return out


def family_chaos(chaos: dict[str, Any], faults: list[str]) -> dict[str, Any]:
    """Random chaos with only ``faults`` arriving, at the same total rate of incidents per
    hour as the full library (the specialist sees as many incidents as a monolithic agent)."""
    allowed = set(faults)
    total = sum(f.rate_per_h for f in LIBRARY)
    kept = sum(f.rate_per_h for f in LIBRARY if f.name in allowed)
    return {**chaos, "rate_scale": float(chaos.get("rate_scale", 1.0)) * total / kept,
            "rates": {f.name: 0.0 for f in LIBRARY if f.name not in allowed}}


@dataclass(frozen=True)
class RouterConf:
    window: int = 6  # observations the diagnoser reads (the diagnosis study's window)
    min_confidence: float = 0.5  # the leading family's score below which low_confidence acts
    low_confidence: str = "escalate"  # escalate | safe_default | specialist
    switch_after: int = 2  # steps a new family must lead before control passes to it
    # what acts while the diagnosis is "healthy": noop (the safe default) or the specialist of
    # the likeliest family (specialists were trained on episodes with quiet stretches too)
    healthy: str = "noop"

    def __post_init__(self) -> None:
        if self.low_confidence not in LOW_CONFIDENCE:
            raise ConfigError(f"router.low_confidence = {self.low_confidence!r}: choose one of "
                              f"{list(LOW_CONFIDENCE)}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"router.min_confidence = {self.min_confidence!r}: a score in "
                              "[0, 1]")
        if self.healthy not in ("noop", "specialist"):
            raise ConfigError(f"router.healthy = {self.healthy!r}: choose noop or specialist")
        if self.window < 1 or self.switch_after < 1:
            raise ConfigError(f"router.window = {self.window}, router.switch_after = "
                              f"{self.switch_after}: both must be >= 1")


class RoutedPolicy:
    """Router + specialists as one policy. Acts one decision at a time (``decide``) or on a
    batch of pipelines in lockstep (``begin_batch(n)`` then ``act``): the same code, so the
    lockstep evaluation plays the episodes ``decide`` plays."""

    name = "specialists"
    acts_in_batches = True

    def __init__(self, model: Any, diagnoser: TreeEnsemble, specialists: dict[str, Any],
                 families: dict[str, list[str]], router: RouterConf | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        self.model, self.diagnoser = model, diagnoser
        self.specialists, self.families = dict(specialists), dict(families)
        self.router = router or RouterConf()
        self.meta = meta or {}
        missing = [f for f in families if f not in self.specialists]
        if missing:
            raise HealgymError(f"families {missing} have no specialist")
        self.fam_names = [*self.families, HEALTHY]
        fam_of = {f: fam for fam, faults in self.families.items() for f in faults}
        fam_of[HEALTHY] = HEALTHY
        # class -> family column: the diagnosis' class probabilities summed per family
        self._cls_fam = np.array([self.fam_names.index(fam_of.get(c.split("@", 1)[0],
                                                                    HEALTHY))
                                  for c in diagnoser.classes])
        names = list(model.action_names)
        self._noop = 0
        self._escalate = names.index("escalate") if "escalate" in names else None
        self.begin_batch(1)

    # -------------------------------------------------------------- state
    def begin_batch(self, n: int) -> None:
        """Fresh router state for ``n`` pipelines (episodes starting)."""
        self._win: np.ndarray | None = None
        self._n = int(n)
        self.current = np.full(n, -1)  # family index in control (-1: none yet)
        self.pending = np.full(n, -1)
        self.streak = np.zeros(n, dtype=int)
        self.handovers = np.zeros(n, dtype=int)

    def reset(self) -> None:
        self.begin_batch(1)
        for s in self.specialists.values():
            s.reset()

    # -------------------------------------------------------------- routing
    def _diagnose(self, obs: np.ndarray) -> np.ndarray:
        obs = np.atleast_2d(np.asarray(obs, dtype=np.float32))
        if self._win is None:
            self._win = np.repeat(obs[:, None, :], self.router.window, axis=1)
        else:
            self._win = np.concatenate([self._win[:, 1:], obs[:, None, :]], axis=1)
        return self.diagnoser.predict_proba(self._win.reshape(len(obs), -1))

    def route(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Diagnose a batch and move control: per row the class probabilities, the family
        scores, the family in control, the diagnosis' confidence (the leading family's score)
        and whether control just passed between specialists."""
        proba = self._diagnose(obs)
        fam = np.zeros((len(proba), len(self.fam_names)))
        np.add.at(fam.T, self._cls_fam, proba.T)
        lead = fam.argmax(axis=1)
        same = lead == self.pending
        self.streak = np.where(same, self.streak + 1, 1)
        self.pending = lead
        h = len(self.fam_names) - 1  # healthy: into or out of an incident switches at once
        cur = self.current
        between = (cur >= 0) & (cur != h) & (lead != h)  # one specialist to another
        switch = (lead != cur) & (~between | (self.streak >= self.router.switch_after))
        handover = switch & between
        self.handovers += handover
        self.current = np.where(switch, lead, self.current)
        # the diagnosis' confidence: the leading family's score (while a new family waits
        # out switch_after, the one in control keeps acting if the new answer is confident)
        score = fam[np.arange(len(fam)), lead]
        return {"proba": proba, "family": fam, "current": self.current.copy(),
                "score": score, "handover": handover,
                "likeliest": fam[:, :h].argmax(axis=1)}

    def _fallback(self, mask: np.ndarray) -> np.ndarray:
        """The low-confidence action per row: escalate (where the mask allows) or noop."""
        out = np.full(len(mask), self._noop)
        if self.router.low_confidence == "escalate" and self._escalate is not None:
            out = np.where(mask[:, self._escalate] > 0, self._escalate, self._noop)
        return out

    def _plan(self, r: dict[str, np.ndarray]) -> np.ndarray:
        """Per row: the family index whose specialist acts, or -1 (noop / low confidence)."""
        healthy = len(self.fam_names) - 1
        quiet = -1 if self.router.healthy == "noop" else r["likeliest"]
        who = np.where(r["current"] == healthy, quiet, r["current"])
        low = (who >= 0) & (r["score"] < self.router.min_confidence)
        if self.router.low_confidence != "specialist":
            who = np.where(low, -2, who)
        return who

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        obs, mask = np.atleast_2d(obs), np.atleast_2d(mask)
        if len(obs) != self._n:
            self.begin_batch(len(obs))
        r = self.route(obs)
        who = self._plan(r)
        actions = np.full(len(obs), self._noop)
        low = who == -2
        actions[low] = self._fallback(mask[low])
        for k, fam in enumerate(self.families):
            rows = np.flatnonzero(who == k)
            if rows.size:
                actions[rows] = self.specialists[fam].act(obs[rows], mask[rows])
        return actions

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision:
        if self._n != 1:
            self.begin_batch(1)
        mask = np.atleast_2d(np.asarray(info["action_mask"]))
        r = self.route(np.asarray(obs)[None, :])
        who = int(self._plan(r)[0])
        proba = r["proba"][0]
        top = np.argsort(-proba)[:3]

        def named(i: int) -> dict[str, Any]:
            fault, _, stage = self.diagnoser.classes[i].partition("@")
            return {"fault": fault, "stage": None if fault == HEALTHY else stage or None,
                    "score": round(float(proba[i]), 3)}

        fam = self.fam_names[int(r["current"][0])]
        expl: dict[str, Any] = {
            "diagnosis": named(int(top[0])), "alternatives": [named(int(i)) for i in top[1:]],
            "family": fam,
            "family_score": round(float(r["family"][0][int(r["current"][0])]), 3),
            "family_scores": {n: round(float(v), 3)
                              for n, v in zip(self.fam_names, r["family"][0], strict=True)},
            "handover": bool(r["handover"][0]), "handovers": int(self.handovers[0]),
            # the guard's confidence check reads this when served
            "confidence": round(float(r["score"][0]), 3)}
        if who >= 0:
            spec = list(self.families)[who]
            d = self.specialists[spec].decide(obs, info)
            expl["specialist"] = spec
            expl["specialist_explanation"] = d.explanation
            return Decision(int(d.action), expl)
        if who == -2:
            a = int(self._fallback(mask)[0])
            expl["specialist"] = None
            expl["low_confidence"] = self.router.low_confidence
            return Decision(a, expl)
        expl["specialist"] = None  # healthy: no incident diagnosed
        return Decision(self._noop, expl)

    # -------------------------------------------------------------- persistence
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the composite; a specialist already saved at ``specialists/<family>/`` is
        kept, the others are written with their ``save``."""
        from healgym.sim.signals import observation_names

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.diagnoser.save(path / "diagnoser.npz")
        rel = {}
        for fam, spec in self.specialists.items():
            sub = path / "specialists" / fam
            if not (sub / "policy.json").is_file():  # RLlib specialists are exported in place
                spec.save(sub)
            rel[fam] = f"specialists/{fam}"
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "env": ENV_VERSION,
                "stages": list(self.model.stages), "action_names": list(self.model.action_names),
                "observation": {"layout": observation_names(self.model)},
                "families": self.families, "router": asdict(self.router),
                "specialists": rel, "diagnoser": {"file": "diagnoser.npz",
                                                  "classes": len(self.diagnoser.classes)},
                **(extra or {})}
        (path / "policy.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return path


def load(path: str | Path, model: Any) -> RoutedPolicy:
    """Load a saved composite for the pipeline ``model``; refuses one trained on another
    pipeline (stages, actions, observation layout), as each specialist's loader does."""
    from agents.rllib.policy import check_compatible  # the exported policies' own check
    from healgym.policy import load_saved_policy

    path = Path(path)
    fix = "retrain it with `python experiments/train.py agent=specialists` on this pipeline"
    meta = read_versioned_json(path, "policy.json", FORMAT, FORMAT_VERSION,
                               "a saved router + specialists policy", fix)
    check_compatible(meta, model, str(path))
    layout = meta["observation"]["layout"]
    families = check_families(meta["families"], f"{path}/policy.json: families")
    try:
        diagnoser = TreeEnsemble.load(path / meta["diagnoser"]["file"])
    except (OSError, KeyError, ValueError) as exc:
        raise HealgymError(f"{path}: the diagnoser cannot be read ({exc}); {fix}") from exc
    if diagnoser.n_features != meta["router"]["window"] * len(layout):
        raise HealgymError(f"{path}: the diagnoser reads {diagnoser.n_features} values, not "
                           f"window {meta['router']['window']} x {len(layout)}; {fix}")
    specialists = {fam: load_saved_policy(path / rel, model)
                   for fam, rel in meta["specialists"].items()}
    return RoutedPolicy(model, diagnoser, specialists, families, RouterConf(**meta["router"]),
                        meta)


class EnsembleDiagnoser:
    """A :class:`TreeEnsemble` behind the diagnoser interface (``diagnose`` / ``rank_batch``),
    so :func:`agents.diagnosis.score` scores a router's diagnoser as it scores the others."""

    name = "router"

    def __init__(self, ensemble: TreeEnsemble) -> None:
        self.ens = ensemble

    def rank_batch(self, X: np.ndarray, top: int = 3) -> list[list[tuple[str, str, float]]]:
        return rank_proba(self.ens.predict_proba(X), self.ens.classes, top)

    def diagnose(self, history: np.ndarray) -> list[tuple[str, str, float]]:
        return self.rank_batch(np.asarray(history, dtype=np.float32).reshape(1, -1))[0]


def diagnosis_metrics(make_env: Any, policy: Any, seeds: Any, options: dict[str, Any] | None
                      ) -> dict[str, Any]:
    """How well ``policy``'s router diagnosed while ``policy`` acted: its diagnoser scored on
    the labelled windows of episodes the policy plays (:func:`agents.diagnosis.score`)."""
    from agents.diagnosis import DiagnosisData, build_dataset, score

    inner = getattr(policy, "policy", policy)  # evaluate.py's PlainObservation wrapper
    data = build_dataset(make_env, seeds, inner.router.window, policy=policy, options=options)
    if not len(data):
        return {"rows": 0, "incidents": 0}
    n = getattr(policy, "n", None)  # the wrapper's policy sees the first n values
    if n is not None and data.windows.shape[2] != n:
        w = np.ascontiguousarray(data.windows[:, :, :n])
        data = DiagnosisData(w.reshape(len(w), -1), w, data.fault, data.stage, data.family,
                             data.incident, data.t, data.meta)
    out = score(EnsembleDiagnoser(inner.diagnoser), data)
    out.pop("confusion")
    return out
