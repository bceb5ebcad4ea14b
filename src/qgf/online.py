"""The online phase of a run: act in the single-task env, store what happens, keep training.

    from qgf.online import OnlineSettings, run_online
    result = run_online("runs/cube1", OnlineSettings(steps=10_000))        # continues an offline run
    result = finetune("runs/cube1", "runs/cube1-online", OnlineSettings(steps=10_000))   # a copy

The agent acts with its acting policy (`settings.sampler`: the method's own policy, or for the
qgf agent QGF guidance of its BC flow at `settings.weight`) on one env of the evaluation env hosts
(`qgf.evaluation.workers`: in this process, or in a worker process with `workers=1`); each action
chunk runs open loop, as in evaluation. Every reached state is labelled by the offline loader's own
rule (`qgf.data.load.task_labels` on its qpos / button states) and stored in the
`qgf.data.replay.OnlineBuffer`; after every executed chunk of n env steps the agent makes
`utd * n` updates of its offline objective on batches of offline ∪ online chunks
(`MixedSampler`: `union` or RLPD's `symmetric` 50/50). With `freeze_policy` (the default for the
qgf agent: online QGF) the policy networks stay byte-identical and only the critic learns.

The phase is a `qgf.training.loop.Trainable` whose step counter is the env step count, so the one
schedule loop (`run_schedule`) runs it: log lines (RUN/online/log.jsonl) and checkpoints
(RUN/online/checkpoints/) land on fixed env steps. A checkpoint is ONE msgpack holding the agent,
the buffer and the counters (env steps, episodes, chunks), so they are saved atomically together;
the final agent is also saved as an ordinary checkpoint of the run (RUN/checkpoints/), which
`qgf evaluate` then reads. Resuming continues from the newest online checkpoint: buffer, counters
and learner state are exactly those saved, but the env's own state is not stored, so the episode
in flight at the checkpoint is cut there (its rows stay, ending as a trajectory end) and the
resumed phase starts the next episode (docs/training.md, "Online phase").

Imports `qgf.checkpoint`, `qgf.data`, `qgf.training`, `qgf.evaluation` (workers, conditions,
rollout seeds) and `qgf.guidance.estimators`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from qgf import checkpoint as ckpt
from qgf.data.replay import SAMPLING_MODES, MixedSampler, OnlineBuffer
from qgf.errors import QGFError
from qgf.evaluation.conditions import TEST_TIME_AGENTS, evaluation_env_name, run_dataset_name
from qgf.evaluation.rollout import episode_reset_seed
from qgf.evaluation.workers import InProcessPool, ProcessPool
from qgf.fileio import atomic_write_json
from qgf.guidance.estimators import SamplerSpec
from qgf.training.log import MetricLog
from qgf.training.loop import run_schedule

ONLINE_DIR = "online"
SETTINGS_FILE = "settings.json"
# Settings that change neither what a step computes nor the collected data: free on resume.
ONLINE_SCHEDULE_FIELDS = frozenset(
    {
        "steps",
        "log_every",
        "ckpt_every",
        "keep_checkpoints",
        "workers",
        "eval_every",
        "eval_episodes",
        "eval_seed",
    }
)


@dataclasses.dataclass(frozen=True)
class OnlineSettings:
    """The online phase (docs/training.md, "Online phase"). `steps` counts env steps."""

    steps: int
    sampling: str = "union"  # 'union' (QAM) or 'symmetric' (RLPD 50/50)
    utd: int = 1  # updates per env step
    sampler: str | None = None  # acting sampler; None: the run's own method (qgf for qgf, else policy)
    weight: float = 0.1  # guidance weight of a guided sampler
    freeze_policy: bool | None = None  # None: frozen for the qgf agent (online QGF), trained otherwise
    seed: int = 0  # env reset seeds and acting noise
    max_episode_steps: int | None = None  # None: the env's own limit
    workers: int = 0  # 0: the env in this process; 1: in a worker process
    log_every: int = 1000
    ckpt_every: int = 10_000
    keep_checkpoints: int = 2
    eval_every: int = 0  # env steps between curve points (a multiple of log_every); 0: no curve
    eval_episodes: int = 5
    eval_seed: int = 3000  # the curve seed (disjoint from the seeds studies choose on: 1000, 2000)

    def __post_init__(self):
        checks = [
            (
                "steps",
                isinstance(self.steps, int) and self.steps >= 1,
                "--online-steps must be an integer >= 1",
            ),
            ("sampling", self.sampling in SAMPLING_MODES, f"online sampling must be one of {SAMPLING_MODES}"),
            ("utd", isinstance(self.utd, int) and self.utd >= 1, "--utd must be an integer >= 1"),
            ("weight", np.isfinite(self.weight) and self.weight >= 0, "--online-weight must be >= 0"),
            ("workers", self.workers in (0, 1), "--online-workers must be 0 (in process) or 1"),
            (
                "max_episode_steps",
                self.max_episode_steps is None or self.max_episode_steps >= 1,
                "--max-episode-steps must be >= 1",
            ),
            ("log_every", self.log_every >= 1, "--online-log-every must be >= 1"),
            ("ckpt_every", self.ckpt_every >= 1, "--online-ckpt-every must be >= 1"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
            (
                "eval_every",
                self.eval_every >= 0 and self.eval_every % self.log_every == 0,
                f"--online-eval-every must be 0 or a multiple of --online-log-every ({self.log_every})",
            ),
            ("eval_episodes", self.eval_episodes >= 1, "--online-eval-episodes must be >= 1"),
            (
                "eval_seed",
                self.eval_seed not in (1000, 2000),
                "--online-eval-seed 1000 and 2000 are choosing seeds",
            ),
        ]
        for field, ok, message in checks:
            if not ok:
                raise QGFError(f"{message}, got {getattr(self, field)!r}")

    def resolved(self, agent_name: str) -> OnlineSettings:
        """Defaults that depend on the agent filled in."""
        test_time = agent_name in TEST_TIME_AGENTS
        sampler = self.sampler or ("qgf" if test_time else "policy")
        freeze = test_time if self.freeze_policy is None else bool(self.freeze_policy)
        return dataclasses.replace(self, sampler=sampler, freeze_policy=freeze)

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ONLINE_SCHEDULE_FIELDS}


class OnlineSnapshot(flax.struct.PyTreeNode):
    """What one online checkpoint holds, together: the agent, the buffer rows and the counters
    (env steps, episodes, chunks chosen)."""

    agent: Any
    buffer: dict
    counters: jax.Array  # int32 (3,)
    seconds: jax.Array  # float32 (): the phase's wall-clock so far (curve points' train_seconds)

    @property
    def step(self) -> jax.Array:
        return self.counters[0]


@dataclasses.dataclass
class OnlineResult:
    run_dir: Path
    agent: Any
    env_steps: int
    episodes: int
    resumed_from: int | None
    metrics: dict[str, float]
    buffer: OnlineBuffer


def online_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / ONLINE_DIR


class StateLabeller:
    """Rewards and masks of reached states, by the rule the offline loader labels the run's data
    with (OGBench's single-task relabelling of qpos / button states; sparse if the data was)."""

    def __init__(self, meta: dict[str, Any]):
        from qgf.envs import parse_name

        dataset = meta.get("dataset") or {}
        self.parsed = parse_name(run_dataset_name(meta))
        if not self.parsed.singletask:
            raise QGFError(
                f"the online phase needs a single-task run (trained on a *-singletask-taskN-v0 dataset); "
                f"{self.parsed.dataset_name} has no task"
            )
        self.sparse = bool(dataset.get("sparse", False))
        self.action_clip_eps = float(dataset.get("action_clip_eps", 1e-5))

    def __call__(self, trace: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        from qgf.data.load import task_labels

        arrays = {key: trace[key] for key in ("qpos", "button_states") if key in trace}
        if "qpos" not in arrays:
            raise QGFError("the env reports no qpos in its info; online transitions cannot be labelled")
        return task_labels(self.parsed, arrays, "online transitions", self.sparse)

    def stored_actions(self, actions: np.ndarray) -> np.ndarray:
        """Executed actions as the loader stores dataset actions (clipped to [-1+eps, 1-eps])."""
        eps = self.action_clip_eps
        return np.clip(actions, -1.0 + eps, 1.0 - eps) if eps > 0 else actions


class OnlinePhase:
    """The `Trainable` of the online phase: `update_many(_, n)` runs n env steps, each chunk of
    them followed by `utd` updates per step. Its `step` is the env step count."""

    def __init__(
        self, agent, offline_data, buffer, settings, env_name, labeller, counters=(0, 0, 0), seconds=0.0
    ):
        settings = settings.resolved(agent.name)
        self.spec = SamplerSpec(estimator=settings.sampler, steps=agent.config.flow_steps)
        agent = with_acting_backup(agent, self.spec, settings.weight)
        self.agent, self.offline_data, self.buffer, self.settings = agent, offline_data, buffer, settings
        self.labeller = labeller
        self.env_steps, self.episodes, self.chunks = (int(value) for value in counters)
        self.sample_fn = MixedSampler(settings.sampling)
        pool_class = ProcessPool if settings.workers else InProcessPool
        self.pool = pool_class(env_name, [1], record=True)
        self.description = self.pool.wait_ready()
        self.limit = settings.max_episode_steps or self.description.max_episode_steps
        if not self.limit:
            raise QGFError("the env has no episode limit: set the online phase's max_episode_steps")
        self.observation: np.ndarray | None = None  # None: the next step starts an episode
        self.episode_length = 0
        self.pending = np.zeros((0, agent.action_dim), np.float32)  # rest of the current chunk
        self.recent: deque[tuple[float, float]] = deque(maxlen=20)  # (return, success) of episodes
        self.episode_return = 0.0
        self.act_key = jax.random.PRNGKey(settings.seed)
        self.env_seconds = self.policy_seconds = self.update_seconds = 0.0
        self.seconds = float(seconds)  # wall-clock of collection and updates, over resumes

    @property
    def step(self) -> int:
        return self.env_steps

    def _run(self, commands: list) -> Any:
        self.pool.submit(0, commands)
        return self.pool.collect(0)[0]

    def _start_episode(self) -> None:
        outcome = self._run([(0, episode_reset_seed(self.settings.seed, self.episodes), None)])
        rewards, masks = self.labeller(outcome.trace)
        self.buffer.start_episode(outcome.observation, rewards[0], masks[0])
        self.observation, self.episode_length, self.episode_return = outcome.observation, 0, 0.0
        self.pending = self.pending[:0]

    def _choose_chunk(self) -> None:
        started = time.perf_counter()
        key = jax.random.fold_in(self.act_key, self.chunks)
        if self.spec.estimator == "policy" and hasattr(self.agent, "exploration_actions"):
            chunk = _explore(self.agent, jnp.asarray(self.observation)[None], key)[0]  # SAC's sampling
        else:
            chunk = self.agent.sample_actions(self.observation, key, self.settings.weight, self.spec)
        self.pending = np.asarray(chunk, np.float32).reshape(-1, self.agent.action_dim).clip(-1.0, 1.0)
        self.chunks += 1
        self.policy_seconds += time.perf_counter() - started

    def _execute(self, budget: int) -> int:
        """Run up to `budget` steps of the current chunk; returns the steps executed."""
        if self.observation is None:
            self._start_episode()
        if not len(self.pending):
            self._choose_chunk()
        actions = self.pending[: min(budget, self.limit - self.episode_length)]
        started = time.perf_counter()
        outcome = self._run([(0, None, actions)])
        self.env_seconds += time.perf_counter() - started
        steps = outcome.steps
        self.pending = self.pending[steps:]
        rewards, masks = self.labeller(outcome.trace)
        self.buffer.extend(
            self.labeller.stored_actions(outcome.trace["actions"]),
            outcome.trace["observations"],
            rewards,
            masks,
        )
        self.env_steps += steps
        self.episode_length += steps
        self.episode_return += outcome.reward
        self.observation = outcome.observation
        if outcome.terminated or outcome.truncated or self.episode_length >= self.limit:
            self.buffer.end_episode()
            self.recent.append((self.episode_return, float(outcome.success)))
            self.episodes += 1
            self.observation = None
        return steps

    def update_many(self, device_data, num_steps: int, sample_fn=None, donate: bool = False):
        del device_data, sample_fn, donate  # the phase brings its own data and sampler
        started_call = time.perf_counter()
        window: list[tuple[int, dict]] = []  # (updates, metrics) per chunk, combined on the host
        remaining = int(num_steps)
        while remaining:
            steps = self._execute(remaining)
            remaining -= steps
            updates = steps * self.settings.utd
            started = time.perf_counter()
            data = {"offline": self.offline_data, "online": self.buffer.device()}
            self.agent, metrics = self.agent.update_many(data, updates, sample_fn=self.sample_fn, donate=True)
            window.append((updates, metrics))
            self.update_seconds += time.perf_counter() - started
        metrics = _combine(jax.device_get(window))
        self.seconds += time.perf_counter() - started_call
        returns = [r for r, _ in self.recent] or [float("nan")]
        metrics.update(
            updates=int(self.agent.step),
            episodes=self.episodes,
            buffer_transitions=self.buffer.num_transitions,
            episode_return=float(np.mean(returns)),
            episode_success=float(np.mean([s for _, s in self.recent])) if self.recent else float("nan"),
        )
        return self, metrics

    def snapshot(self) -> OnlineSnapshot:
        counters = np.asarray([self.env_steps, self.episodes, self.chunks], np.int32)
        seconds = np.asarray(self.seconds, np.float32)
        return OnlineSnapshot(
            agent=self.agent, buffer=self.buffer.state(), counters=counters, seconds=seconds
        )

    def close(self) -> None:
        self.pool.close()


def with_acting_backup(agent, spec: SamplerSpec, weight: float):
    """`agent` whose td critic backs up on the acting sampler's guided actions: online QGF with a
    critic that needs next actions (critic=td) bootstraps on the guided policy's own actions
    a' = `qgf.guidance.sample`(BC flow, guidance critic, s', spec, weight), not on the BC flow's
    unguided samples it trains on offline. Other agents, critics and the 'policy' sampler: unchanged."""
    guided = spec.estimator != "policy"
    if agent.name not in TEST_TIME_AGENTS or not agent.critic.needs_next_actions or not guided:
        return agent
    return agent.replace(backup_sampler=(spec, float(weight)))


def _combine(window: list[tuple[int, dict]]) -> dict[str, float]:
    """Update-weighted means of the chunks' metrics (extremes for *_min / *_max)."""
    from qgf.training.steps import metric_kind

    total = sum(count for count, _ in window)
    combined = {}
    for name in window[0][1]:
        values = [float(metrics[name]) for _, metrics in window]
        kind = metric_kind(name)
        if kind in ("min", "max"):
            combined[name] = min(values) if kind == "min" else max(values)
        else:
            combined[name] = (
                sum(count * value for (count, _), value in zip(window, values, strict=True)) / total
            )
    return combined


def buffer_capacity(settings: OnlineSettings) -> int:
    """Rows for `steps` env steps: one per step plus each episode's first state (at most one
    episode per step), plus the rows a resumed phase inherits."""
    return 2 * settings.steps + 2


def _read_settings(directory: Path) -> dict | None:
    path = directory / SETTINGS_FILE
    return ckpt.read_json(path, "online settings") if path.is_file() else None


def _latest_snapshot(directory: Path, template_agent):
    checkpoints = ckpt.list_checkpoints(directory)
    if not checkpoints:
        return None
    step, path = checkpoints[-1]
    state, _ = ckpt.verified_state(path)
    buffer_template = {key: np.zeros_like(np.asarray(value)) for key, value in state["buffer"].items()}
    template = OnlineSnapshot(
        agent=template_agent,
        buffer=buffer_template,
        counters=np.zeros(3, np.int32),
        seconds=np.zeros((), np.float32),
    )
    return ckpt.restore(path, template, state)


def run_online(
    run_dir: str | Path,
    settings: OnlineSettings,
    *,
    data_dir: str | Path | None = None,
    dataset: Any = None,
    progress: bool = True,
    on_log=None,
) -> OnlineResult:
    """Run (or resume) the online phase of the run in `run_dir` up to `settings.steps` env steps,
    starting from the run's latest agent checkpoint (or the newest online checkpoint)."""
    from qgf.data.chunks import to_device
    from qgf.training.runs import load_training_data

    run_dir = Path(run_dir)
    if ckpt.is_run_dir(run_dir) and not ckpt.list_checkpoints(run_dir):  # trained 0 offline steps
        from qgf.agents import agent_class

        config, meta = ckpt.read_config(run_dir), ckpt.read_meta(run_dir)
        fresh = agent_class(config.agent).create(config.seed, meta["obs_dim"], meta["action_dim"], config)
        ckpt.save_checkpoint(run_dir, fresh)
    run = ckpt.load_run(run_dir)
    if run.config.goal_conditioned:
        raise QGFError("the online phase runs single-task agents; this run is goal-conditioned")
    settings = settings.resolved(run.agent.name)
    spec = SamplerSpec(estimator=settings.sampler, steps=run.config.flow_steps)
    from qgf.agents.base import check_sampler

    check_sampler(run.agent, spec)
    labeller = StateLabeller(run.meta)
    directory = online_dir(run_dir)
    stored = _read_settings(directory)
    if stored is not None and stored.get("identity") != _jsonable(settings.identity()):
        raise QGFError(
            f"{directory} holds an online phase with other settings ({stored.get('identity')}); "
            "choose a new --out (qgf finetune) or the same settings"
        )
    directory.mkdir(parents=True, exist_ok=True)
    meta_env = run_dataset_name(run.meta)
    env_name, _ = evaluation_env_name(meta_env)
    frozen = _policy_networks(run.agent) if settings.freeze_policy else ()
    template = ckpt.agent_template(run.config, run.meta)
    snapshot = _latest_snapshot(directory, template)
    if snapshot is not None:
        agent, counters, seconds = snapshot.agent, np.asarray(snapshot.counters), float(snapshot.seconds)
        buffer = OnlineBuffer.from_state(jax.device_get(snapshot.buffer), buffer_capacity(settings))
        resumed_from = int(counters[0])
    else:
        agent, counters, seconds, resumed_from = run.agent, (0, 0, 0), 0.0, None
        buffer = OnlineBuffer(buffer_capacity(settings), run.meta["obs_dim"], run.meta["action_dim"])
        atomic_write_json(
            directory / SETTINGS_FILE,
            {
                "identity": _jsonable(settings.identity()),
                "settings": dataclasses.asdict(settings),
                "env": env_name,
                "start_update": int(run.agent.step),
            },
        )
    agent = agent.replace(frozen_networks=frozen)
    if dataset is None:
        if data_dir is None and run.meta.get("dataset", {}).get("path"):
            data_dir = str(Path(run.meta["dataset"]["path"]).parent)
        dataset = load_training_data(run.config, meta_env, data_dir)
    phase = OnlinePhase(agent, to_device(dataset), buffer, settings, env_name, labeller, counters, seconds)
    log = MetricLog(directory, phase.step)
    if settings.eval_every:
        on_log = _with_curve(on_log, phase, run, settings)
    try:
        phase, step, records = run_schedule(
            settings,
            phase,
            None,
            [directory],
            [log],
            step=phase.step,
            checkpoints=lambda current: [current.snapshot()],
            last_saved=resumed_from,
            progress=progress,
            description="online",
            postfix=("episode_success", "q_mean", "steps_per_s"),
            on_log=on_log,
        )
    finally:
        phase.close()
    final = phase.agent.replace(frozen_networks=())
    if hasattr(final, "backup_sampler"):
        final = final.replace(backup_sampler=None)
    ckpt.save_checkpoint(run_dir, final, metrics={"env_steps": step, **records[0]})
    return OnlineResult(run_dir, final, step, phase.episodes, resumed_from, records[0], phase.buffer)


def finetune(run_dir: str | Path, out_dir: str | Path, settings: OnlineSettings, **kwargs) -> OnlineResult:
    """The online phase of a finished run, in a new run directory `out_dir` (a copy of its config,
    meta and latest checkpoint; the original is not touched). Resumes if `out_dir` holds one."""
    source, out = Path(run_dir), Path(out_dir)
    if source.resolve() == out.resolve():
        raise QGFError("qgf finetune writes a new run: --out must differ from the run it starts from")
    if not ckpt.is_run_dir(out):
        # checks the source before anything is written; a run trained 0 offline steps has no
        # checkpoint to copy (run_online starts it from a fresh agent)
        fresh = ckpt.is_run_dir(source) and not ckpt.list_checkpoints(source)
        if fresh:
            config, meta = ckpt.read_config(source), ckpt.read_meta(source)
        else:
            run = ckpt.load_run(source)
            config, meta = run.config, run.meta
        out.mkdir(parents=True, exist_ok=True)
        if not fresh:
            checkpoint = ckpt.checkpoint_path(source, run.step)
            (out / ckpt.CHECKPOINT_DIR).mkdir(exist_ok=True)
            for suffix in (".msgpack", ".json"):
                shutil.copyfile(
                    checkpoint.with_suffix(suffix), ckpt.checkpoint_path(out, run.step).with_suffix(suffix)
                )
        atomic_write_json(out / ckpt.META_FILE, {**meta, "finetuned_from": str(source.resolve())})
        atomic_write_json(out / ckpt.CONFIG_FILE, config.to_dict())  # last: marks a run dir
    return run_online(out, settings, **kwargs)


# ------------------------------------------------------------------ the online curve


def _with_curve(on_log, phase: OnlinePhase, run, settings: OnlineSettings):
    """`on_log` that first evaluates the current agent at every multiple of `eval_every` env
    steps (0 included: the starting agent) and at the end, and appends the point to
    RUN/online/curve.json (the learning-curve format of `qgf.evaluation.curve`, with env_steps).
    A missing point at the step the phase starts or resumes at is evaluated first."""
    from qgf.evaluation.curve import append_point, curve_settings, point_from_results, read_curve
    from qgf.evaluation.run import evaluate_run

    directory = online_dir(run.path)
    label = f"{settings.sampler}@{settings.weight:g}" if settings.sampler not in ("policy", "none") else None
    recorded = curve_settings(
        settings.eval_every,
        settings.eval_episodes,
        settings.eval_seed,
        [label or settings.sampler],
        settings.max_episode_steps,
    )

    def evaluate(step: int) -> None:
        agent = phase.agent.replace(frozen_networks=())
        current = ckpt.Run(run.path, agent, run.config, run.meta, int(agent.step))
        results = evaluate_run(
            current,
            samplers=[settings.sampler],
            weights=[settings.weight],
            episodes=settings.eval_episodes,
            seed=settings.eval_seed,
            workers=0,
            max_episode_steps=settings.max_episode_steps,
        )
        point = point_from_results(int(agent.step), results, phase.seconds, env_steps=step)
        append_point(directory, point, recorded)

    def is_point(step: int) -> bool:
        return step % settings.eval_every == 0 or step == settings.steps

    # Catch up: the point where the phase starts (env step 0: the offline agent, where Fig. 2's
    # curves begin) or resumes (a kill between that step's checkpoint and its point), if missing.
    document = read_curve(directory)
    have = {point.get("env_steps") for point in document["points"]} if document else set()
    if is_point(phase.step) and phase.step not in have:
        evaluate(phase.step)

    def hook(record):
        step = int(record["step"])
        if is_point(step):
            evaluate(step)
        if on_log is not None:
            on_log(record)

    return hook


@jax.jit
def _explore(agent, observations, key):
    return agent.exploration_actions(observations, key)


def _policy_networks(agent) -> tuple[str, ...]:
    """The agent's own networks (every trained network but the critic component's)."""
    observations, actions = jnp.zeros((1, agent.obs_dim)), jnp.zeros((1, agent.chunk_dim))
    critic = jax.eval_shape(lambda: agent.critic.init_params(jax.random.PRNGKey(0), observations, actions))
    return tuple(name for name in agent.params if name not in critic)


def _jsonable(value: dict) -> dict:
    return json.loads(json.dumps(value))
