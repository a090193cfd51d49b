"""Typed Hydra configuration for healgym's experiments.

The config groups under ``configs/`` (``env``, ``telemetry``, ``chaos``, ``agent``) merge into
these dataclasses, registered in Hydra's ConfigStore, so a mistyped key or a wrong type fails
when the config is composed, naming the key. ``???`` marks a value that must be given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class EnvConf:
    step_seconds: float = 10.0
    episode_steps: int = 360
    reward: dict[str, Any] = field(default_factory=dict)
    slo: dict[str, Any] = field(default_factory=dict)
    # per-stage metrics beyond the canonical six, each a mapping of MetricSpec's fields
    # (name, doc, lo, hi, neutral, scale_floor), replayed from the dataset column of its name
    extra_metrics: list[dict[str, Any]] = field(default_factory=list)
    history: bool = False  # the observation's history block (see docs/environment.md)
    label_lag_s: float = 600.0  # labels arrive late: the accuracy estimate's lag, s (0: none)
    scrape_gap_p: float = 0.02  # a stage's scrape fails at a step with this probability
    metric_lag_s: float = 20.0  # the per-stage metrics shown are this old, s (0: current)
    # fault signatures fitted from real incidents (`healgym calibrate DATASET --out F`) in
    # place of the built-in ones for the types the file covers; null: the library's
    faults: str | None = None


@dataclass
class TelemetryConf:
    dataset: str | None = None  # a dataset folder; None: the embedded synthetic telemetry
    # which entities of the dataset are replayed, and under which role: a {role: entity}
    # mapping (runbooks and scenario files speak of the roles: ingest, features, train, serve,
    # deliver, or any a user names), a list of entities (each its own role), "call_graph", or
    # None (every entity). Presets: configs/telemetry/{nezha_ob,nezha_tt,petshop,nab}.yaml
    stages: Any = None
    replay_incidents: bool = False  # replay the dataset's labelled fault windows in episodes
    # Fractions of the telemetry's span: training and tuning replay the first, held-out
    # evaluation the second, so evaluation windows were never seen in training.
    train_range: list[float] = field(default_factory=lambda: [0.0, 0.7])
    eval_range: list[float] = field(default_factory=lambda: [0.7, 1.0])


@dataclass
class ChaosConf:
    enabled: bool = True
    rate_scale: float = 1.0
    scenario: str | None = None  # a scenario YAML by path


@dataclass
class QLearningConf:
    """``agent=qlearning``: tabular Q-learning on the batched env (:mod:`agents.qlearning`)."""

    _target_: str = "agents.training.QLearningTrainer"
    kind: str = "qlearning"
    alpha: float = 0.1
    gamma: float = 0.95
    epsilon: float = 0.05
    epsilon_start: float | None = 1.0
    pessimistic: bool = False  # start the table at a never-ending violation's return, not 0
    history_features: bool = False  # add HISTORY_FEATURES (needs env.history=true)
    steps: int = 20_000  # vector steps
    num_envs: int = 256


@dataclass
class RunbookConf:
    """``agent=runbook``: the YAML runbook and its threshold tuner (:mod:`agents.runbook`)."""

    _target_: str = "agents.training.RunbookTrainer"
    kind: str = "runbook"
    runbook: str = "configs/runbooks/classic.yaml"
    expert: str = "configs/runbooks/expert.yaml"  # evaluate.py's "expert" policy
    tune: bool = True
    tune_seeds: int = 50  # the tuner's training seeds (issue 15: >= 50 for a tuning that holds)


@dataclass
class RLlibConf:
    """What PPO and DQN on RLlib share (:mod:`agents.rllib.trainer`)."""

    _target_: str = "agents.training.RLlibTrainer"
    kind: str = "ppo"
    iterations: int = 100  # algo.train() calls
    reward_scale: float = 0.01  # what the learner sees; metrics stay in healgym's units
    lr: float = 3e-4
    gamma: float = 0.95
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    train_batch_size: int = 4096  # per learner
    extra_training: dict[str, Any] = field(default_factory=dict)  # more AlgorithmConfig.training
    num_env_runners: int = 0  # 0: sample in the driver
    num_envs_per_env_runner: int = 64
    vectorize_mode: str = "vector_entry_point"  # healgym's batched env; "sync" for gym's
    rollout_fragment_length: int = 64
    num_cpus_per_env_runner: float = 1.0
    num_learners: int = 0  # 0: learn in the driver
    num_cpus_per_learner: float = 1.0
    num_gpus_per_learner: float = 0.0
    checkpoint_every: int = 10  # iterations; 0: only at the end
    resume_from: str | None = None  # an algorithm checkpoint folder (<run>/checkpoints/iter_N)
    mlflow_flush_every: int = 10  # iterations per batched MLflow call


@dataclass
class PPOConf(RLlibConf):
    """``agent=ppo``."""

    kind: str = "ppo"
    minibatch_size: int = 512
    num_epochs: int = 6
    entropy_coeff: float = 0.01
    gae_lambda: float = 0.95
    clip: float = 0.2
    vf_clip: float = 1000.0  # returns are in the hundreds


@dataclass
class DQNConf(RLlibConf):
    """``agent=dqn``."""

    kind: str = "dqn"
    n_step: int = 3
    target_update_steps: int = 2000  # env steps
    learning_starts: int = 2000  # env steps
    epsilon: float = 0.05
    epsilon_start: float = 1.0
    epsilon_decay_steps: int = 100_000  # env steps from epsilon_start to epsilon
    replay_capacity: int = 200_000


@dataclass
class SpecialistsConf:
    """``agent=specialists``: specialists per failure family behind a router that diagnoses
    (:mod:`agents.specialists`), saved as one policy."""

    _target_: str = "agents.training.SpecialistsTrainer"
    _recursive_: bool = False  # the nested learners' configs stay configs
    kind: str = "specialists"
    # {family: [fault type, ...]} covering the library; null: infra / model / data (the
    # library's categories)
    families: Any = None
    # the specialists' learner: qlearning (a Q-table per family) or ppo (RLlib multi-agent
    # PPO: one module per family, on the multi-agent view of healgym)
    specialist: str = "qlearning"
    qlearning: QLearningConf = field(default_factory=QLearningConf)
    ppo: PPOConf = field(default_factory=PPOConf)
    # the router's diagnoser: extremely randomised trees on labelled windows of episodes where
    # no policy acts and where the expert runbook acts, in turn
    diagnoser_episodes: int = 200
    diagnoser_trees: int = 40
    diagnoser_min_leaf: int = 8  # samples per leaf (fewer, smaller trees: as accurate here)
    healthy_every: int = 5  # one no-fault window in this many, labelled healthy
    # refit the diagnoser adding diagnoser_episodes more where the composite itself acts, so
    # it reads the observations its specialists cause (without: it reads them unseen)
    on_policy_diagnoser: bool = True
    window: int = 6
    min_confidence: float = 0.5
    low_confidence: str = "escalate"  # escalate | safe_default | specialist
    switch_after: int = 2
    healthy: str = "noop"  # while the diagnosis is healthy: noop | specialist (the likeliest)


#: Each agent's schema, by its config-group option (configs/agent/<name>.yaml).
AGENTS: dict[str, type] = {"qlearning": QLearningConf, "runbook": RunbookConf, "ppo": PPOConf,
                           "dqn": DQNConf, "specialists": SpecialistsConf}


@dataclass
class RayConf:
    address: str | None = None  # "auto", "ray://head:10001", "head:6379"; None: local Ray
    num_cpus: int | None = None  # local Ray only; None: all cores
    runtime_env: dict[str, Any] = field(default_factory=dict)  # e.g. {"working_dir": "."}


@dataclass
class MlflowConf:
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI or sqlite:///<project>/mlflow.db
    experiment: str = "healgym"


@dataclass
class TrainConf:
    defaults: list[Any] = field(default_factory=lambda: [
        "_self_", {"env": "default"}, {"telemetry": "synthetic"}, {"chaos": "default"},
        {"agent": "qlearning"}])
    env: EnvConf = field(default_factory=EnvConf)
    telemetry: TelemetryConf = field(default_factory=TelemetryConf)
    chaos: ChaosConf = field(default_factory=ChaosConf)
    agent: Any = MISSING  # one of AGENTS' schemas, from configs/agent/<name>.yaml (agent=NAME)
    # the runbook baselines evaluate.py compares with ("runbook", "runbook_tuned")
    runbook: RunbookConf = field(default_factory=RunbookConf)
    mlflow: MlflowConf = field(default_factory=MlflowConf)
    ray: RayConf = field(default_factory=RayConf)
    seed: int = 0
    output_dir: str = "results/train"
    # register the trained policy in the MLflow registry (and move 'candidate', except in a
    # sweep); false: it stays a run artifact (`promote.py --run RUN_ID` registers it later)
    register: bool = False


@dataclass
class EvaluateConf(TrainConf):
    policies: list[str] = field(default_factory=lambda: [
        "qlearning", "expert", "runbook", "oracle", "random", "noop"])
    reference: str = "expert"  # the policy every other is paired against (the bar to beat)
    train_seeds: int = 3  # learned policies trained here: one per seed, seeds seed .. seed+n-1
    qlearning_path: str | None = None  # a saved Q-table folder; None: train one first
    # a zoo entry (zoo/qlearning: one folder per training seed), evaluated in place of training
    qlearning_zoo: str | None = None
    # exported RLlib policies (<train run>/policy), or models:/healgym-ppo@champion
    ppo_path: str | None = None
    dqn_path: str | None = None
    # zoo entries of exported RLlib PPO policies (one folder per training seed): ppo on the
    # plain observation, ppo_history on the one with the history block
    ppo_zoo: str | None = None
    ppo_history_zoo: str | None = None
    # router + specialists (agent=specialists): a zoo entry, or one saved folder
    specialists_zoo: str | None = None
    specialists_path: str | None = None
    # held-out episodes per distribution on which a diagnosing policy's router is scored (top-1
    # / top-3 fault, family, stage, time to diagnose: agents/diagnosis.py), its first seed
    diagnosis_episodes: int = 30
    episodes: int = 30  # per distribution (random chaos; each scenario file)
    scenario_episodes: int | None = None  # per scenario file, if not `episodes`
    # held-out scenario files (null: random chaos); training only ever sees random chaos
    eval_scenarios: list[Any] = field(default_factory=lambda: [None])
    held_out_seed: int = 10_000
    output_dir: str = "results/evaluate"


@dataclass
class FinetuneConf(TrainConf):
    """``experiments/finetune.py``: update a tabular policy from a decision log."""

    log: str = "???"  # the decision log: a SQLite file or a database URL
    policy: str = "???"  # a Q-table folder (results/train/<run>) or models:/NAME@ALIAS
    since: str | None = None  # ISO date/time (UTC) or unix seconds
    until: str | None = None
    policy_version: str | None = None
    target: str | None = None  # a stage or "pipeline"
    trust: str = "resolved"  # human verdicts used as demonstrations: resolved | all | none
    epochs: int = 20  # sweeps over the logged transitions
    alpha: float = 0.1  # offline Q-learning step size
    gamma: float | None = None  # None: the policy's own
    margin: float = 1.0  # how far a demonstrated action must beat the others (reward units)
    td: bool = True  # offline Q-learning on the transitions (else demonstrations only)
    episodes: int = 10  # held-out episodes per scenario, before and after
    eval_scenarios: list[Any] = field(default_factory=lambda: [None])
    held_out_seed: int = 10_000
    register: bool = False  # register the fine-tuned policy (alias candidate)
    output_dir: str = "results/finetune"


def check_keys(cfg: Any, schema: type) -> None:
    """Refuse keys no schema has (Hydra's ``+key=value`` adds them silently to a composed
    config): a ConfigError naming the key and the closest known one. Free-form mappings
    (``env.reward``, ``agent.extra_training``, ...) take any key."""
    import dataclasses

    from omegaconf import DictConfig

    from healgym.errors import ConfigError, did_you_mean

    def walk(node: Any, cls: type, path: str) -> None:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in node.keys():
            where = f"{path}{key}"
            if key not in fields:
                if key in ("hydra",) and not path:
                    continue
                raise ConfigError(
                    f"config key {where!r} is not in the {cls.__name__} schema (an override "
                    f"`+{where}=...` adds nothing the code reads).{did_you_mean(str(key), fields)}"
                    f" Known keys here: {sorted(fields)}")
            value = node[key] if not OmegaConf.is_missing(node, key) else None
            sub = fields[key].type
            sub_cls = {c.__name__: c for c in SCHEMAS}.get(str(sub).split(".")[-1].strip("'\""))
            if key == "agent" and isinstance(value, DictConfig):  # the chosen agent's schema
                sub_cls = AGENTS.get(str(value.get("kind")))
            if isinstance(value, DictConfig) and sub_cls is not None:
                walk(value, sub_cls, f"{where}.")

    walk(cfg, schema, "")


def register() -> None:
    cs = ConfigStore.instance()
    for name, schema in AGENTS.items():  # configs/agent/<name>.yaml extends <name>_schema
        cs.store(group="agent", name=f"{name}_schema", node=schema)
    cs.store(name="train", node=TrainConf)
    cs.store(name="evaluate", node=EvaluateConf)
    cs.store(name="finetune", node=FinetuneConf)


def env_kwargs(cfg: Any, split: str = "train") -> dict[str, Any]:
    """gymnasium.make keyword arguments from a composed config; ``split`` is "train" or "eval"
    (which part of the telemetry's span episodes replay)."""
    span = cfg.telemetry.train_range if split == "train" else cfg.telemetry.eval_range
    kw: dict[str, Any] = {
        "time_range": [float(span[0]), float(span[1])],
        "step_seconds": cfg.env.step_seconds, "episode_steps": cfg.env.episode_steps,
        "reward": dict(cfg.env.reward) or None, "slo": dict(cfg.env.slo) or None,
        "chaos": {"enabled": cfg.chaos.enabled, "rate_scale": cfg.chaos.rate_scale},
    }
    if cfg.env.get("history"):
        kw["history"] = True
    for key in ("label_lag_s", "scrape_gap_p", "metric_lag_s"):
        if cfg.env.get(key) is not None:
            kw[key] = float(cfg.env[key])
    if cfg.env.get("faults"):
        kw["faults"] = cfg.env.faults
    if cfg.env.get("extra_metrics"):
        kw["extra_metrics"] = tuple(dict(x) for x in cfg.env.extra_metrics)
    if cfg.telemetry.dataset:
        kw["dataset"] = cfg.telemetry.dataset
    stages = cfg.telemetry.stages
    if stages:
        if isinstance(stages, str):
            kw["stages"] = stages
        elif OmegaConf.is_dict(stages) or isinstance(stages, dict):
            kw["stages"] = {str(k): str(v) for k, v in stages.items()}
        else:
            kw["stages"] = [str(x) for x in stages]
    if cfg.telemetry.get("replay_incidents"):
        kw["replay_incidents"] = True
    if cfg.chaos.scenario:
        kw["scenario"] = cfg.chaos.scenario
    return kw


#: The dataclass schemas (nested ones are found by their type's name).
SCHEMAS: tuple[type, ...] = (EnvConf, TelemetryConf, ChaosConf, RayConf, MlflowConf, TrainConf,
                             EvaluateConf, FinetuneConf, RunbookConf, *AGENTS.values())
