"""Diagnosis as a task (issue 18): windows of observations labelled from the env's ground truth,
diagnosers behind one interface, and the metrics a root-cause benchmark reports.

* :func:`build_dataset` runs episodes (a policy acting, or none) and keeps, at every step with
  one active fault (for its first ``horizon_s``), the last ``window`` observations, labelled
  with that fault's type, family and stage (``info["faults"]``: the ground truth no operator
  sees).
* A diagnoser's ``diagnose(history) -> [(fault, stage, score), ...]`` ranks its answers, best
  first. :class:`TreeDiagnoser` (a decision tree, as ops teams write them) and
  :class:`BoostedDiagnoser` (gradient-boosted trees) learn from a dataset (scikit-learn);
  :class:`SignatureDiagnoser` is the replay tool's signature matcher
  (:func:`healgym.analysis.replay.diagnose`); :class:`MajorityDiagnoser` is the floor.
* :func:`score` gives top-1 and top-3 fault-type accuracy, stage localisation (the top answer's
  stage), time to diagnose per incident (from its onset to the first step from which the top
  answer's fault type is right until the incident's last step), and the confusion of fault
  types, with 95 % bootstrap intervals over incidents (seeded).

AIOpsLab scores detection, localisation and root-cause analysis as separate tasks; ITBench
reports localisation accuracy and time to diagnose.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from healgym.sim.faults import LIBRARY

#: fault type -> family (the specialists' split): the library's categories, "ml" named "model"
FAMILY: dict[str, str] = {f.name: {"ml": "model"}.get(f.category, f.category) for f in LIBRARY}

Ranked = list[tuple[str, str, float]]
#: the label of a window with no fault active (fault type, stage and family)
HEALTHY = "healthy"


@dataclass
class DiagnosisData:
    """``X[i]``: the window of observations flattened; labels per row; ``incident[i]``: an id
    of the incident (episode, onset) the row belongs to; ``t[i]``: seconds since its onset."""

    X: np.ndarray
    windows: np.ndarray  # (n, window, n_obs), for diagnosers that read the raw history
    fault: np.ndarray
    stage: np.ndarray
    family: np.ndarray
    incident: np.ndarray
    t: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.fault)


def build_dataset(make_env: Callable[[], Any], seeds: Sequence[int], window: int = 6,
                  policy: Any = None, options: dict[str, Any] | None = None,
                  families: dict[str, str] | None = None, horizon_s: float = 600.0,
                  single: bool = True, healthy_every: int = 0) -> DiagnosisData:
    """Labelled windows from episodes of ``make_env()`` (``policy`` acting; None: no-op; a
    list: one per episode, in turn). A row is kept while its fault is at most ``horizon_s`` old
    and, with ``single``, the only library fault active (an overlapping second fault would make
    the label ambiguous). ``healthy_every=k`` also keeps every k-th step with no fault active,
    labelled ``HEALTHY`` (fault, stage and family), so a router can tell "no incident"."""
    fam = families or FAMILY
    env = make_env()
    rows: dict[str, list[Any]] = {k: [] for k in ("w", "fault", "stage", "family", "inc", "t")}
    policies = policy if isinstance(policy, (list, tuple)) else [policy]
    for n, seed in enumerate(seeds):
        pol = policies[n % len(policies)]
        obs, info = env.reset(seed=int(seed), options=options)
        if pol is not None:
            pol.reset()
        hist = [obs] * window
        onsets: dict[tuple[str, str], float] = {}
        quiet = 0
        while True:
            faults = [(f, s) for f, s in info.get("faults") or [] if not f.startswith("_")]
            now = float(info["time_s"])
            for key in faults:
                onsets.setdefault(key, now)
            for key in list(onsets):
                if key not in faults:
                    del onsets[key]
            if faults and (len(faults) == 1 or not single) and \
                    now - onsets[faults[0]] <= horizon_s:
                f, s = faults[0]  # the oldest active fault: the incident's root
                rows["w"].append(np.array(hist[-window:]))
                rows["fault"].append(f)
                rows["stage"].append(s)
                rows["family"].append(fam.get(f, "other"))
                rows["inc"].append(f"{seed}:{f}:{s}:{onsets[(f, s)]:.0f}")
                rows["t"].append(now - onsets[(f, s)])
            elif not faults and healthy_every:
                quiet += 1
                if quiet % healthy_every == 0:
                    rows["w"].append(np.array(hist[-window:]))
                    for k in ("fault", "stage", "family"):
                        rows[k].append(HEALTHY)
                    rows["inc"].append(f"{seed}:{HEALTHY}:{quiet}")
                    rows["t"].append(0.0)
            a = 0 if pol is None else int(pol.decide(obs, info).action)
            obs, _, terminated, truncated, info = env.step(a)
            hist.append(obs)
            if terminated or truncated:
                break
    env.close()
    w = np.array(rows["w"], dtype=np.float32).reshape(-1, window, env.observation_space.shape[0])
    return DiagnosisData(X=w.reshape(len(w), -1), windows=w, fault=np.array(rows["fault"]),
                         stage=np.array(rows["stage"]), family=np.array(rows["family"]),
                         incident=np.array(rows["inc"]), t=np.array(rows["t"], dtype=float),
                         meta={"window": window, "episodes": len(seeds)})


def concat(*parts: DiagnosisData) -> DiagnosisData:
    """The rows of several datasets as one."""
    keys = ("X", "windows", "fault", "stage", "family", "incident", "t")
    cols = {k: np.concatenate([getattr(p, k) for p in parts]) for k in keys}
    return DiagnosisData(**cols, meta={"episodes": sum(p.meta.get("episodes", 0) for p in parts),
                                       "window": parts[0].meta.get("window")})


class Diagnoser(Protocol):
    name: str

    def diagnose(self, history: np.ndarray) -> Ranked: ...


def _joint(fault: np.ndarray, stage: np.ndarray) -> np.ndarray:
    return np.char.add(np.char.add(fault.astype(str), "@"), stage.astype(str))


def rank_proba(proba: np.ndarray, classes: Sequence[Any], top: int = 3) -> list[Ranked]:
    """Each row's ``top`` classes ("fault@stage") by probability, as (fault, stage, p)."""
    out = []
    for p in proba:
        idx = np.argsort(-p)[:top]
        out.append([(*str(classes[i]).split("@", 1), float(p[i])) for i in idx])
    return out  # type: ignore[return-value]


class _Learned:
    name = "learned"

    def __init__(self, estimator: Any) -> None:
        self.est = estimator

    def fit(self, data: DiagnosisData) -> _Learned:
        self.est.fit(data.X, _joint(data.fault, data.stage))
        return self

    def rank_batch(self, X: np.ndarray, top: int = 3) -> list[Ranked]:
        return rank_proba(self.est.predict_proba(np.atleast_2d(X)), self.est.classes_, top)

    def diagnose(self, history: np.ndarray) -> Ranked:
        return self.rank_batch(np.asarray(history, dtype=np.float32).reshape(1, -1))[0]


class TreeDiagnoser(_Learned):
    """A decision tree over the window (depth-limited: readable, as runbook trees are)."""

    name = "tree"

    def __init__(self, max_depth: int = 10, seed: int = 0) -> None:
        from sklearn.tree import DecisionTreeClassifier

        super().__init__(DecisionTreeClassifier(max_depth=max_depth, random_state=seed,
                                                min_samples_leaf=3))


class BoostedDiagnoser(_Learned):
    """Gradient-boosted trees over the window (scikit-learn's histogram boosting)."""

    name = "boosted"

    def __init__(self, max_iter: int = 150, seed: int = 0) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        super().__init__(HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed,
                                                        learning_rate=0.1,
                                                        early_stopping=False))


class SignatureDiagnoser:
    """The replay tool's signature matcher on the window's last observation (no training)."""

    name = "signature"

    def __init__(self, model: Any) -> None:
        self.model = model

    def diagnose(self, history: np.ndarray) -> Ranked:
        from healgym.analysis.replay import diagnose

        obs = np.asarray(history)[-1]
        d = diagnose(self.model, obs, top=2)
        return [(d.fault, d.stage, float(d.score)), *[(f, s, float(c))
                                                      for f, s, c in d.alternatives]]


class MajorityDiagnoser:
    """Always the most common (fault, stage) of the training data: the floor to beat."""

    name = "majority"

    def fit(self, data: DiagnosisData) -> MajorityDiagnoser:
        counts = Counter(zip(data.fault.tolist(), data.stage.tolist(), strict=True))
        self.ranked = [(f, s, n / len(data)) for (f, s), n in counts.most_common(3)]
        return self

    def diagnose(self, history: np.ndarray) -> Ranked:
        return list(self.ranked)


def rank_all(diagnoser: Any, data: DiagnosisData) -> list[Ranked]:
    if hasattr(diagnoser, "rank_batch"):
        return diagnoser.rank_batch(data.X)  # type: ignore[no-any-return]
    return [diagnoser.diagnose(w) for w in data.windows]


def time_to_diagnose(incident: np.ndarray, t: np.ndarray, right: np.ndarray
                     ) -> dict[str, float | None]:
    """Per incident: the time since onset of the first row from which the top answer is right
    in every later row of the incident (None: never settled on the right answer)."""
    out: dict[str, float | None] = {}
    for inc in dict.fromkeys(incident.tolist()):
        sel = np.flatnonzero(incident == inc)
        order = sel[np.argsort(t[sel], kind="stable")]
        ok = right[order]
        if not ok[-1]:
            out[inc] = None
            continue
        wrong = np.flatnonzero(~ok)
        first = 0 if wrong.size == 0 else int(wrong[-1]) + 1
        out[inc] = float(t[order[first]])
    return out


def _boot(values: np.ndarray, groups: np.ndarray, reps: int = 1000, seed: int = 0
          ) -> tuple[float, float]:
    """95 % bootstrap interval of the mean, resampling incidents (rows of an incident are not
    independent)."""
    uniq = np.unique(groups)
    if uniq.size < 2:
        m = float(values.mean()) if values.size else float("nan")
        return m, m
    idx = {g: np.flatnonzero(groups == g) for g in uniq}
    sums = np.array([values[idx[g]].sum() for g in uniq])
    ns = np.array([idx[g].size for g in uniq])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, uniq.size, size=(reps, uniq.size))
    means = sums[draws].sum(axis=1) / ns[draws].sum(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def score(diagnoser: Any, data: DiagnosisData) -> dict[str, Any]:
    """Top-1 / top-3 fault-type accuracy, stage localisation, time to diagnose and the
    fault-type confusion of ``diagnoser`` on ``data`` (intervals over incidents)."""
    ranked = rank_all(diagnoser, data)
    top1 = np.array([r[0][0] == f for r, f in zip(ranked, data.fault, strict=True)])
    top3 = np.array([f in [x[0] for x in r[:3]] for r, f in zip(ranked, data.fault,
                                                                  strict=True)])
    stage = np.array([r[0][1] == s for r, s in zip(ranked, data.stage, strict=True)])
    fam = np.array([FAMILY.get(r[0][0], "other") == f for r, f in zip(ranked, data.family,
                                                                       strict=True)])
    ttd = time_to_diagnose(data.incident, data.t, top1)
    settled = [v for v in ttd.values() if v is not None]
    confusion: dict[str, dict[str, int]] = {}
    for r, f in zip(ranked, data.fault, strict=True):
        row = confusion.setdefault(str(f), {})
        row[r[0][0]] = row.get(r[0][0], 0) + 1

    def metric(x: np.ndarray) -> dict[str, float]:
        lo, hi = _boot(x.astype(float), data.incident)
        return {"value": float(x.mean()) if x.size else float("nan"), "ci_low": lo,
                "ci_high": hi}

    return {"rows": len(data), "incidents": len(ttd), "top1": metric(top1),
            "top3": metric(top3), "stage": metric(stage), "family": metric(fam),
            "diagnosed_share": len(settled) / max(len(ttd), 1),
            "time_to_diagnose_median_s": float(np.median(settled)) if settled else None,
            "confusion": confusion}


def markdown(results: dict[str, dict[str, Any]], title: str) -> str:
    def ci(d: dict[str, float]) -> str:
        return f"{d['value']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}]"

    rows = [f"**{title}** (95 % bootstrap intervals over incidents)", "",
            "| diagnoser | rows / incidents | top-1 fault | top-3 fault | family | stage | "
            "diagnosed | time to diagnose (median) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        ttd = r["time_to_diagnose_median_s"]
        rows.append(f"| {name} | {r['rows']} / {r['incidents']} | {ci(r['top1'])} | "
                    f"{ci(r['top3'])} | {ci(r['family'])} | {ci(r['stage'])} | "
                    f"{100 * r['diagnosed_share']:.0f} % | "
                    f"{'-' if ttd is None else f'{ttd:.0f} s'} |")
    return "\n".join(rows)


def lookalikes(confusion: dict[str, dict[str, int]], n: int = 8) -> list[tuple[str, str, int]]:
    """The most frequent (true, diagnosed) confusions: the look-alikes."""
    pairs = [(t, p, c) for t, row in confusion.items() for p, c in row.items() if p != t]
    return sorted(pairs, key=lambda x: -x[2])[:n]


# --------------------------------------------------------------------------- a portable forest
class TreeEnsemble:
    """A fitted scikit-learn tree or forest (DecisionTree, RandomForest, ExtraTrees
    classifiers) as arrays, predicting in numpy: saved as ``.npz`` and loaded with
    ``allow_pickle=False``, so a composite policy's diagnoser is as safe to load as its
    Q-tables. ``predict_proba`` equals the estimator's (``tests/test_specialists.py``).

    Nodes of every tree are concatenated (``offset[k]`` is tree ``k``'s root); a leaf's class
    distribution is kept sparse (``leaf_ptr`` / ``leaf_cls`` / ``leaf_p``, CSR by node), as
    a leaf of a forest over many classes holds a few of them."""

    def __init__(self, arrays: dict[str, np.ndarray], classes: list[str]) -> None:
        self.a = arrays
        self.classes = list(classes)
        self.n_features = int(arrays["n_features"])

    @classmethod
    def from_sklearn(cls, est: Any) -> TreeEnsemble:
        trees = getattr(est, "estimators_", None) or [est]
        left, right, feat, thr, offs = [], [], [], [], []
        ptr, lcls, lp = [0], [], []
        base = 0
        for t in trees:
            tr = t.tree_
            offs.append(base)
            is_leaf = tr.children_left < 0
            left.append(np.where(is_leaf, -1, tr.children_left + base))
            right.append(np.where(is_leaf, -1, tr.children_right + base))
            feat.append(np.where(is_leaf, 0, tr.feature))
            thr.append(tr.threshold)
            v = tr.value[:, 0, :].astype(np.float64)
            v = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-12)
            for i in range(tr.node_count):
                nz = np.flatnonzero(v[i]) if is_leaf[i] else np.array([], dtype=int)
                lcls.append(nz)
                lp.append(v[i, nz])
                ptr.append(ptr[-1] + nz.size)
            base += tr.node_count
        arrays: dict[str, np.ndarray] = {"left": np.concatenate(left).astype(np.int32),
                  "right": np.concatenate(right).astype(np.int32),
                  "feature": np.concatenate(feat).astype(np.int32),
                  "threshold": np.concatenate(thr).astype(np.float64),
                  "offset": np.array(offs, dtype=np.int32),
                  "leaf_ptr": np.array(ptr, dtype=np.int64),
                  "leaf_cls": np.concatenate(lcls).astype(np.int32),
                  "leaf_p": np.concatenate(lp).astype(np.float32),
                  "n_features": np.array(est.n_features_in_)}
        return cls(arrays, [str(c) for c in est.classes_])

    def save(self, path: Path) -> None:
        np.savez_compressed(path, classes=np.array(self.classes), **self.a)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> TreeEnsemble:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "classes"}
            classes = [str(c) for c in data["classes"]]
        return cls(arrays, classes)

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """The leaf each row reaches in each tree: (n, n_trees) node indices. Every (row,
        tree) pair descends one level a pass; pairs at a leaf drop out of the next pass."""
        a = self.a
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[1] != self.n_features:
            raise ValueError(f"the diagnoser reads {self.n_features} values per window; got "
                             f"{X.shape[1]}")
        n, k = len(X), a["offset"].size
        node = np.tile(a["offset"].astype(np.int64), n)
        flat_x = X.ravel()
        base = np.repeat(np.arange(n, dtype=np.int64) * X.shape[1], k)
        left, right, feature, threshold = a["left"], a["right"], a["feature"], a["threshold"]
        live = np.flatnonzero(left[node] >= 0)  # a one-node tree's root is its leaf
        while live.size:
            cur = node[live]
            go_left = flat_x[base[live] + feature[cur]] <= threshold[cur]
            nxt = np.where(go_left, left[cur], right[cur])
            node[live] = nxt
            live = live[left[nxt] >= 0]
        return node.reshape(n, k)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        a = self.a
        leaf = self.leaves(X)
        n, k = leaf.shape
        c = len(self.classes)
        start, stop = a["leaf_ptr"][leaf.ravel()], a["leaf_ptr"][leaf.ravel() + 1]
        counts = stop - start
        row = np.repeat(np.repeat(np.arange(n), k), counts)
        idx = np.repeat(stop - counts.cumsum(), counts) + np.arange(counts.sum())
        out = np.bincount(row * c + a["leaf_cls"][idx], weights=a["leaf_p"][idx],
                          minlength=n * c).reshape(n, c)
        return out / k


class ForestDiagnoser(_Learned):
    """Extremely randomised trees over the window (scikit-learn's ExtraTrees), exportable as a
    :class:`TreeEnsemble` (the composite policy's router diagnoses with it)."""

    name = "forest"

    def __init__(self, trees: int = 60, min_samples_leaf: int = 3, seed: int = 0) -> None:
        from sklearn.ensemble import ExtraTreesClassifier

        super().__init__(ExtraTreesClassifier(n_estimators=trees, random_state=seed,
                                              min_samples_leaf=min_samples_leaf, n_jobs=1))

    def export(self) -> TreeEnsemble:
        return TreeEnsemble.from_sklearn(self.est)
