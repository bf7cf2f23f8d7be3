"""Offline pretraining: DIME with a conservative critic and a behaviour term, on logged data only.

:func:`pretrain` loads a dataset into a :class:`ReplayStore` (offline part only), fits observation
statistics on it, and runs gradient steps through the shared loop (:func:`run_loop`): metrics CSV,
progress, periodic evaluation when an environment is available (``env_id``, or the dataset's own
when it is registered), checkpoints and a summary.

The checkpoint is written for the online stage (``dime-offline finetune --checkpoint``):

* ``config.json`` holds the agent configuration *online*: the offline temperature settings
  (:meth:`OfflineConfig.agent_config`) are used while pretraining only, so fine-tuning's
  temperature auto-tunes again against its entropy target, starting from the pretrained alpha;
* ``meta.json`` ``extra.regularizers`` describes both regularisers with their *online* weight and
  calibration, which fine-tuning attaches when it loads the checkpoint (the boundary switch);
  ``extra.offline`` records the whole :class:`OfflineConfig` and ``extra.run_config`` the run;
* the normalisation statistics are the dataset's, which fine-tuning applies unchanged.

The returned ``result.agent`` is switched to the online phase too (configuration and regularisers),
so it equals the final checkpoint and can go straight to ``finetune(cfg, agent=result.agent)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.checkpoints import load_agent_state
from dime_offline.config import check_section, resolve_agent_config, to_dict
from dime_offline.data.load import load_replay_store
from dime_offline.data.replay import ReplayConfig, ReplayStore
from dime_offline.data.returns import discounted_returns_to_go, value_support
from dime_offline.data.spaces import SpaceSpec, check_spaces_match
from dime_offline.envs.make import make_env, spaces_of
from dime_offline.errors import ConfigError
from dime_offline.evaluation.metrics import (
    REFERENCES_KEY,
    reference_returns,
)
from dime_offline.regularizers import (
    REGULARIZERS_KEY,
    OfflineConfig,
    regularizer_weights,
)
from dime_offline.trainers.loop import (
    PRETRAIN_CONFIG_FILE,
    Cadence,
    CheckpointTag,
    RunResult,
    StepReport,
)
from dime_offline.trainers.scaffold import RunScaffold, StageSettings

OFFLINE_METRIC_PREFIX = "offline/"


@dataclass(frozen=True)
class PretrainConfig(StageSettings):
    """Everything ``dime-offline pretrain`` does: its own fields below, the shared run settings in
    :class:`StageSettings`. Load with ``load_run_config(PretrainConfig, ...)``."""

    data: str = ""
    """Dataset: a canonical Parquet file or folder (streamed), a D4RL-style HDF5 file or a local
    Minari dataset id/folder."""
    steps: int = 100_000
    """Gradient steps (critic updates; the actor updates on every ``agent.policy_delay``-th)."""
    out_dir: str = "runs/pretrain"
    """Run directory: metrics.csv, tb/, checkpoint/, best/, learning_curve.png, summary.json, pretrain_config.json."""
    agent: dict[str, Any] = field(default_factory=dict)
    """DIMEConfig overrides on top of the preset (``--set agent.batch_size=512``); these are the
    agent's *online* settings, which the checkpoint keeps (offline temperature: see ``offline``)."""
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    """Regularisation and temperature of this stage and their online values (``--set offline.conservative_weight=0.3``)."""
    env_id: str | None = None
    """Environment for evaluation and for the checkpoint's env id; None: the dataset's ``env_id``,
    evaluated when it is a registered gymnasium id (a given id must exist)."""
    eval_every: int = 10_000
    """Evaluate every this many gradient steps when an environment is available (0: only at the end)."""
    normalize_obs: bool = True
    """Normalise observations with the dataset's statistics (stored in the checkpoint, used online)."""
    nonfinite: Literal["error", "drop"] = "error"
    """NaN/inf in the data: "error" stops with the first bad row; "drop" cuts the affected episodes
    before their first non-finite transition (see ``load_dataset``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_section("offline", self.offline, OfflineConfig)
        if self.steps < 1:
            raise ConfigError(f"field 'steps': must be >= 1, got {self.steps}")
        if self.eval_every < 0:
            raise ConfigError(f"field 'eval_every': must be >= 0, got {self.eval_every}")


@dataclass
class PretrainResult(RunResult):
    """:class:`RunResult` (every stage's summary) plus the dataset and the regularisers' online settings."""

    data: str = ""
    """The dataset pretrained on."""
    transitions: int = 0
    """Transitions in the offline store."""
    regularizers_online: dict[str, Any] = field(default_factory=dict)
    """The regularisers as fine-tuning will attach them (checkpoint ``extra.regularizers``)."""
    data_return_mean: float | None = None
    """Mean undiscounted episode return of the data (the logged behaviour's score)."""
    value_support: tuple[float, float] = (0.0, 0.0)
    """The critics' support [v_min, v_max] (fitted to the data unless set)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON summary: :meth:`RunResult.to_dict` keys plus ``data``, ``transitions``, ``regularizers_online``,
        ``data_return_mean`` and ``value_support``."""
        return {**super().to_dict(), "data": self.data, "transitions": self.transitions,
                "regularizers_online": self.regularizers_online, "data_return_mean": self.data_return_mean,
                "value_support": list(self.value_support)}


def pretrain(cfg: PretrainConfig) -> PretrainResult:
    """Pretrain DIME offline on ``cfg.data``; see the module docstring for what the checkpoint holds."""
    if not cfg.data:
        raise ConfigError("no dataset given (e.g. --data logs.parquet)")
    # Every setting is checked before anything is written.
    cadence = Cadence.of_run(cfg)
    online_cfg = resolve_agent_config(DIMEConfig, DIMEConfig.preset(cfg.preset), cfg.agent)
    run = RunScaffold.prepare(cfg, "pretrain", config_file=PRETRAIN_CONFIG_FILE)
    store = _load_store(cfg, online_cfg)
    online_cfg = _fit_value_support(online_cfg, store, cfg)
    reward_std = None if store.normalization is None else store.normalization.reward_std
    offline_cfg = cfg.offline.agent_config(online_cfg, reward_std=reward_std)
    env_id, evaluate_in_env = _evaluation_env(cfg, store)
    spaces = _spaces(store, env_id if evaluate_in_env else None, cfg)

    norm_stats = store.normalization if cfg.normalize_obs else None
    normalizer = None if norm_stats is None else (norm_stats.obs_mean, norm_stats.obs_std)
    agent = DIMEAgent(store.obs_dim, store.action_dim, offline_cfg, obs_normalizer=normalizer, device=cfg.device, seed=cfg.seed)
    cfg.offline.attach(agent, "offline", seed=cfg.seed)
    online_regularizers = cfg.offline.describe("online", seed=cfg.seed)
    if run.resume is not None:  # the agent of the first session's checkpoint, on top of the same build
        load_agent_state(run.resume.directory, agent)
    with run.recording(description=f"pretrain {Path(cfg.data).name}", unit="gradient steps"):
        if env_id is not None and not evaluate_in_env:
            run.progress.notice(f"the dataset's environment '{env_id}' is not registered here: no evaluation rollouts")
        sample_generator = torch.Generator(store.device).manual_seed(cfg.seed + 3)
        run.track_generators(agent, {"sampler": sample_generator})

        def step(current: int) -> StepReport:
            batch = store.sample(offline_cfg.batch_size, generator=sample_generator)
            metrics = {f"train/{k}": v for k, v in agent.update(batch).items()}
            metrics.update(regularizer_weights(agent, OFFLINE_METRIC_PREFIX))
            return StepReport(updates=1, metrics=metrics)

        def write_checkpoint(current: int, tag: CheckpointTag) -> None:
            extra = {
                "stage": "pretrain",
                "gradient_steps": current,
                "env_steps": 0,
                "data": cfg.data,
                "transitions": store.offline_size,
                "offline": to_dict(cfg.offline),
                "offline_agent_config": to_dict(offline_cfg),
                REGULARIZERS_KEY: online_regularizers,
                "run_config": to_dict(cfg),
                REFERENCES_KEY: reference_returns(None, store.metadata),
            }
            run.save_checkpoint(current, tag, agent, online_cfg, norm_stats, extra, spaces=spaces, env_id=env_id)

        run_evaluation = None
        if env_id is not None and evaluate_in_env:
            run_evaluation = run.evaluation(agent, env_id, metadata=store.metadata, checkpoint=write_checkpoint)
        loop = run.run_loop(
            cadence, step, evaluate=run_evaluation, checkpoint=write_checkpoint,
            eval_generators=[agent.act_generator],
        )
        _enter_online_phase(agent, online_cfg, cfg)
        return run.finish(
            loop,
            lambda run_dir: PretrainResult(
                command="pretrain", env=env_id, loop=loop, agent=agent, **run_dir,
                data=cfg.data,
                transitions=store.offline_size,
                regularizers_online=online_regularizers,
                data_return_mean=None if store.normalization is None else store.normalization.episode_return_mean,
                value_support=(online_cfg.v_min, online_cfg.v_max),
            ),
            curve_title=f"DIME offline pretraining on {Path(cfg.data).name}", x_label="gradient steps",
        )


def _load_store(cfg: PretrainConfig, agent_cfg: DIMEConfig) -> ReplayStore:
    """The dataset as an offline-only store; returns-to-go use the agent's discount."""
    replay_cfg = ReplayConfig(
        online_capacity=0, gamma=agent_cfg.gamma, offline_fraction=1.0, truncation=cfg.offline.return_tail
    )
    return load_replay_store(cfg.data, replay_cfg, nonfinite=cfg.nonfinite, device=cfg.device)


def _fit_value_support(agent_cfg: DIMEConfig, store: ReplayStore, cfg: PretrainConfig) -> DIMEConfig:
    """``agent_cfg`` with the support fitted to the data (``offline.value_support``), unless the user set
    ``agent.v_min`` or ``agent.v_max``."""
    if cfg.offline.value_support == "preset" or "v_min" in cfg.agent or "v_max" in cfg.agent:
        return agent_cfg
    n = store.offline_size
    reward = store.reward[:n].cpu().numpy()
    terminated = store.terminated[:n].cpu().numpy().astype(bool)
    if cfg.offline.value_support == "returns":
        ends = terminated | store.truncated[:n].cpu().numpy().astype(bool)
        ends[-1] = True
        observed = discounted_returns_to_go(reward, ends, terminated, agent_cfg.gamma, truncation="zero")
        v_min, v_max = value_support(observed, reward, agent_cfg.gamma, margin=cfg.offline.value_support_margin, hold_rewards=False)
    else:
        # A terminal step's reward (an interlock trip's penalty) counts once, as it is earned: held for ever
        # it would stretch the support ~100x past every logged value (CSTR twin: [-16 000, 3 000] for values
        # of about -40, all in one atom: pretrained policies scored -450 to -800, the logged PI loop -210).
        v_min, v_max = value_support(
            store.mc_return[:n].cpu().numpy(), reward, agent_cfg.gamma,
            margin=cfg.offline.value_support_margin, terminated=terminated,
        )
    return dataclasses.replace(agent_cfg, v_min=round(v_min, 3), v_max=round(v_max, 3))


def _evaluation_env(cfg: PretrainConfig, store: ReplayStore) -> tuple[str | None, bool]:
    """(env id for the checkpoint, whether to evaluate in it)."""
    import dime_offline.envs  # noqa: F401  (registers the process twin)

    if cfg.env_id:
        return cfg.env_id, True
    env_id = store.metadata.env_id
    return env_id, env_id is not None and env_id in gym.registry


def _spaces(store: ReplayStore, env_id: str | None, cfg: PretrainConfig) -> SpaceSpec:
    """The checkpoint's spaces: the dataset's declared bounds (else [-1, 1]), checked against the env."""
    declared = SpaceSpec.from_metadata(store.metadata, store.obs_dim, store.action_dim)
    spaces = declared or SpaceSpec(
        obs_dim=store.obs_dim, action_dim=store.action_dim,
        action_low=(-1.0,) * store.action_dim, action_high=(1.0,) * store.action_dim,
    )
    if env_id is not None:
        env = make_env(env_id, max_episode_steps=cfg.max_episode_steps)
        try:
            env_spaces = spaces_of(env)
        finally:
            env.close()
        check_spaces_match(spaces, env_spaces, expected_from=f"dataset {cfg.data}", actual_from=f"environment '{env_id}'")
        if declared is None:
            spaces = env_spaces
    return spaces


def _enter_online_phase(agent: DIMEAgent, online_cfg: DIMEConfig, cfg: PretrainConfig) -> None:
    """Make the in-memory agent what the checkpoint holds: the online configuration (temperature,
    critic reduction) and the regularisers with their online weights, ready for ``finetune(agent=...)``."""
    agent.cfg = online_cfg
    agent.target_entropy = online_cfg.target_entropy(agent.act_dim)
    cfg.offline.attach(agent, "online", seed=cfg.seed)
