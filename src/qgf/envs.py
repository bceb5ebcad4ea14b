"""OGBench names and environments, without ever touching the network.

OGBench names encode three things that the rest of qgf needs separately:

- the *dataset* (`cube-double-play-v0`), which names the files `cube-double-play-v0.npz` and
  `cube-double-play-v0-val.npz`, or the 100M-style directory `cube-double-play-100m-v0/` holding
  `cube-double-play-v0-NNN.npz` slices;
- the *environment* used for evaluation (`cube-double-singletask-task2-v0`, or the goal-conditioned
  `cube-double-v0`);
- the *task* (2), which decides how rewards and masks are relabelled from `qpos`/`button_states`.

`parse_name` accepts any of these spellings and returns an `OGBenchName` that can produce the others.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass

from qgf.errors import QGFError
from qgf.registry import suggest


@dataclass(frozen=True)
class DomainSpec:
    """Facts about one OGBench manipulation domain (measured with ogbench 1.2.2; see DESIGN §3)."""

    domain: str
    family: str  # 'cube' | 'scene' | 'puzzle': selects the oracles and the relabelling rule
    observation_dim: int
    episode_limit: int  # evaluation episode length of the single-task environments
    upstream_train_episodes: int  # episodes in OGBench's own `<domain>-play-v0.npz`
    stack_probability: tuple[float, float]  # per-episode U(low, high) for `set_new_target(p_stack=...)`
    has_button_states: bool


ACTION_DIM = 5
NUM_TASKS = 5
# The cube stacking probabilities follow OGBench's play-data recipe; domains without stacking
# (scene, puzzle) get upstream's fallback of 0.5, which their `set_new_target` accepts and ignores or
# uses for their own single cube.
MANIPULATION_DOMAINS: dict[str, DomainSpec] = {
    spec.domain: spec
    for spec in (
        DomainSpec("cube-single", "cube", 28, 200, 1000, (0.0, 0.0), False),
        DomainSpec("cube-double", "cube", 37, 500, 1000, (0.0, 0.25), False),
        DomainSpec("cube-triple", "cube", 46, 1000, 3000, (0.05, 0.35), False),
        DomainSpec("cube-quadruple", "cube", 55, 1000, 5000, (0.1, 0.5), False),
        DomainSpec("cube-octuple", "cube", 91, 1500, 1000, (0.5, 0.5), False),
        DomainSpec("scene", "scene", 40, 750, 1000, (0.5, 0.5), True),
        DomainSpec("puzzle-3x3", "puzzle", 55, 500, 1000, (0.5, 0.5), True),
        DomainSpec("puzzle-4x4", "puzzle", 83, 500, 1000, (0.5, 0.5), True),
        DomainSpec("puzzle-4x5", "puzzle", 99, 1000, 3000, (0.5, 0.5), True),
        DomainSpec("puzzle-4x6", "puzzle", 115, 1000, 5000, (0.5, 0.5), True),
    )
}

# Dataset types OGBench publishes per domain. Loading accepts all of them; generation makes `play`.
MANIPULATION_DATASET_TYPES = ("play", "noisy")
LOCOMOTION_DATASET_TYPES = {
    "pointmaze-medium": ("navigate", "stitch"),
    "pointmaze-large": ("navigate", "stitch"),
    "pointmaze-giant": ("navigate", "stitch"),
    "pointmaze-teleport": ("navigate", "stitch"),
    "antmaze-medium": ("navigate", "stitch", "explore"),
    "antmaze-large": ("navigate", "stitch", "explore"),
    "antmaze-giant": ("navigate", "stitch"),
    "antmaze-teleport": ("navigate", "stitch", "explore"),
    "humanoidmaze-medium": ("navigate", "stitch"),
    "humanoidmaze-large": ("navigate", "stitch"),
    "humanoidmaze-giant": ("navigate", "stitch"),
    "antsoccer-arena": ("navigate", "stitch"),
    "antsoccer-medium": ("navigate", "stitch"),
}
ALL_DATASET_TYPES = ("play", "noisy", "navigate", "stitch", "explore")
SLICE_SIZE_TAG = "100m"  # OGBench's 100M directories: `<domain>-<type>-100m-v0/<domain>-<type>-v0-NNN.npz`

_VERSION = re.compile(r"^v\d+$")
_TASK = re.compile(r"^task(\d+)$")
_SIZE_TAG = re.compile(r"^\d+[mk]$")


@dataclass(frozen=True)
class OGBenchName:
    """A parsed OGBench name. `dataset_type` is None when the name was an environment name."""

    domain: str
    dataset_type: str | None
    singletask: bool
    task: int | None  # None with singletask=True means OGBench's default task
    version: str = "v0"
    size_tag: str | None = None  # e.g. '100m' for the 100M slice directories

    @property
    def is_manipulation(self) -> bool:
        return self.domain in MANIPULATION_DOMAINS

    @property
    def spec(self) -> DomainSpec:
        return manipulation_spec(self.domain)

    @property
    def dataset_name(self) -> str:
        """The file stem of the standard dataset, e.g. `cube-double-play-v0`."""
        return f"{self.domain}-{self.dataset_type or 'play'}-{self.version}"

    @property
    def train_filename(self) -> str:
        return f"{self.dataset_name}.npz"

    @property
    def val_filename(self) -> str:
        return f"{self.dataset_name}-val.npz"

    @property
    def slice_dir_name(self) -> str:
        """The directory name OGBench uses for its 100M-transition datasets."""
        return f"{self.domain}-{self.dataset_type or 'play'}-{SLICE_SIZE_TAG}-{self.version}"

    def slice_filename(self, index: int, split: str = "train") -> str:
        suffix = "-val" if split == "val" else ""
        return f"{self.dataset_name}-{index:03d}{suffix}.npz"

    @property
    def goal_env_name(self) -> str:
        """The goal-conditioned environment, e.g. `cube-double-v0` (used for data collection)."""
        return f"{self.domain}-{self.version}"

    @property
    def env_name(self) -> str:
        """The evaluation environment: single-task when a task was named, else goal-conditioned."""
        if not self.singletask:
            return self.goal_env_name
        task = "" if self.task is None else f"-task{self.task}"
        return f"{self.domain}-singletask{task}-{self.version}"

    @property
    def singletask_dataset_name(self) -> str:
        """`cube-double-play-singletask-task2-v0`: what `ogbench.make_env_and_datasets` expects."""
        task = "" if self.task is None else f"-task{self.task}"
        return f"{self.domain}-{self.dataset_type or 'play'}-singletask{task}-{self.version}"

    def with_task(self, task: int | None) -> OGBenchName:
        return OGBenchName(self.domain, self.dataset_type, True, task, self.version, self.size_tag)


def _known_domains() -> tuple[str, ...]:
    return tuple(MANIPULATION_DOMAINS) + tuple(LOCOMOTION_DATASET_TYPES)


def dataset_types_for(domain: str) -> tuple[str, ...]:
    if domain in MANIPULATION_DOMAINS:
        return MANIPULATION_DATASET_TYPES
    return LOCOMOTION_DATASET_TYPES.get(domain, ())


def known_names() -> list[str]:
    """Every dataset and environment name qgf understands (used for close-match suggestions)."""
    names = []
    for domain in _known_domains():
        names.append(f"{domain}-v0")
        names.append(f"{domain}-singletask-v0")
        names.extend(f"{domain}-singletask-task{t}-v0" for t in range(1, NUM_TASKS + 1))
        for dataset_type in dataset_types_for(domain):
            names.append(f"{domain}-{dataset_type}-v0")
            names.append(f"{domain}-{dataset_type}-singletask-v0")
            names.extend(f"{domain}-{dataset_type}-singletask-task{t}-v0" for t in range(1, NUM_TASKS + 1))
    return names


def _unknown(name: str, what: str = "OGBench name") -> QGFError:
    """The close matches among `known_names()` (too many to list them all), else an example."""
    hint = suggest(name, known_names(), n=5, cutoff=0.6) or "; e.g. cube-double-play-singletask-task2-v0"
    return QGFError(f"unknown {what} {name!r}{hint}")


def parse_name(name: str) -> OGBenchName:
    """Parse a dataset name (`cube-double-play[-singletask[-task2]]-v0`, `cube-double-play-100m-v0`)
    or an environment name (`cube-double-v0`, `cube-double-singletask-task2-v0`)."""
    if not isinstance(name, str) or not name:
        raise QGFError(f"expected an OGBench name such as cube-double-play-v0, got {name!r}")
    if name.startswith("visual-"):
        raise QGFError(
            f"{name!r}: pixel-based (visual-*) datasets are not supported; use the state-based name"
        )
    parts = name.split("-")
    if len(parts) < 2 or not _VERSION.match(parts[-1]):
        raise _unknown(name)
    version = parts[-1]
    body = parts[:-1]
    singletask, task = False, None
    if "singletask" in body:
        pos = body.index("singletask")
        rest = body[pos + 1 :]
        if len(rest) > 1 or (rest and not _TASK.match(rest[0])):
            raise _unknown(name)
        if rest:
            task = int(_TASK.match(rest[0]).group(1))
            if not 1 <= task <= NUM_TASKS:
                raise QGFError(f"{name!r}: task must be 1..{NUM_TASKS}, got {task}")
        singletask = True
        body = body[:pos]
    size_tag = None
    if body and _SIZE_TAG.match(body[-1]):
        size_tag = body[-1]
        body = body[:-1]
    dataset_type = None
    if body and body[-1] in ALL_DATASET_TYPES:
        dataset_type = body[-1]
        body = body[:-1]
    domain = "-".join(body)
    if domain not in _known_domains():
        raise _unknown(name)
    if dataset_type is not None and dataset_type not in dataset_types_for(domain):
        raise _unknown(name, "dataset")
    if size_tag is not None and dataset_type is None:
        raise _unknown(name)
    return OGBenchName(domain, dataset_type, singletask, task, version, size_tag)


def manipulation_spec(domain_or_name: str) -> DomainSpec:
    """The `DomainSpec` of a manipulation domain, given the domain or any OGBench name of it."""
    domain = domain_or_name
    if domain not in _known_domains():
        domain = parse_name(domain_or_name).domain
    if domain not in MANIPULATION_DOMAINS:
        choices = ", ".join(MANIPULATION_DOMAINS)
        raise QGFError(f"{domain_or_name!r} is not a manipulation domain; qgf generates data for: {choices}")
    return MANIPULATION_DOMAINS[domain]


def parse_file_name(filename: str) -> tuple[OGBenchName | None, str, int | None]:
    """Recognise `<dataset>.npz`, `<dataset>-val.npz`, `<dataset>-NNN.npz`, `<dataset>-NNN-val.npz`.

    Returns (parsed dataset name or None if unrecognised, split, slice index or None).
    """
    stem = filename.rsplit("/", 1)[-1]
    if stem.endswith(".npz"):
        stem = stem[: -len(".npz")]
    split = "train"
    if stem.endswith("-val"):
        split, stem = "val", stem[: -len("-val")]
    slice_index = None
    match = re.match(r"^(.*-v\d+)-(\d{3,})$", stem)
    if match:
        stem, slice_index = match.group(1), int(match.group(2))
    try:
        parsed = parse_name(stem)
    except QGFError:
        return None, split, slice_index
    return (parsed if parsed.dataset_type else None), split, slice_index


_BOX_PRECISION_WARNING = r".*precision lowered by casting to float32.*"


def ignore_box_precision_warnings() -> None:
    """Gymnasium warns, on every access to `action_space`, that OGBench's float64 action bounds lose
    precision as float32. That is expected and harmless, so qgf silences it process-wide."""
    warnings.filterwarnings("ignore", message=_BOX_PRECISION_WARNING)


def _quiet_make(factory, *args, **kwargs):
    ignore_box_precision_warnings()
    return factory(*args, **kwargs)


def make_env(name: str, **env_kwargs):
    """Build an OGBench environment from any dataset or environment name, never downloading data.

    A single-task dataset name (`cube-double-play-singletask-task2-v0`) gives the single-task
    environment, exactly as `ogbench.make_env_and_datasets(name, env_only=True)` would.
    """
    parsed = parse_name(name)
    import gymnasium
    import ogbench

    if parsed.dataset_type is not None and parsed.size_tag is None:
        dataset_name = parsed.singletask_dataset_name if parsed.singletask else parsed.dataset_name
        return _quiet_make(ogbench.make_env_and_datasets, dataset_name, env_only=True, **env_kwargs)
    if parsed.env_name not in gymnasium.registry:
        raise _unknown(name, "environment")
    return _quiet_make(gymnasium.make, parsed.env_name, **env_kwargs)


NUM_EVALUATION_GOALS = 5  # OGBench's evaluation goals per goal-conditioned env: task_id 1..5


@functools.cache
def _seedable_action_space_class(cls):
    """A subclass of the OGBench env class `cls` whose `action_space` can be pinned to one seeded
    Box. OGBench builds a fresh, unseeded Box on every `action_space` access, and its task-mode
    reset steps a few `action_space.sample()` actions to settle the goal scene: pinning a Box seeded
    from the reset seed makes the goal observation a function of the seed (same distribution)."""

    def fresh_action_space(self):
        return cls.action_space.fget(self)

    def action_space(self):
        pinned = self.__dict__.get("_qgf_pinned_action_space")
        return pinned if pinned is not None else fresh_action_space(self)

    members = {
        "action_space": property(action_space),
        "_qgf_fresh_action_space": fresh_action_space,
        "__module__": cls.__module__,
    }
    return type(cls.__name__, (cls,), members)


@functools.cache
def _goal_task_wrapper():
    import gymnasium
    import numpy as np

    class GoalTaskEnv(gymnasium.Wrapper):
        """A goal-conditioned OGBench env fixed to evaluation goal `task_id` (1..5), whose
        observations are `concat(observation, goal)`: what a goal-conditioned run's networks take
        (QGF paper §6.4), so every sampler evaluates it unchanged. Success is OGBench's own
        `info['success']` for that goal.

        OGBench settles the goal scene with a few random actions from an unseeded generator, so
        the goal's arm pose differs between resets with the same seed. With `seed_goal=True` a
        seeded reset draws those actions from a generator seeded with the reset seed (the same
        uniform distribution), which makes the whole episode — start, goal observation and
        dynamics — a function of the seed; an unseeded reset stays OGBench's."""

        def __init__(self, env, task_id: int, seed_goal: bool = False):
            super().__init__(env)
            if not 1 <= int(task_id) <= NUM_EVALUATION_GOALS:
                raise QGFError(
                    f"evaluation goal {task_id} does not exist; OGBench has goals 1..{NUM_EVALUATION_GOALS}"
                )
            self.task_id = int(task_id)
            self.seed_goal = bool(seed_goal)
            self._goal = None
            space = env.observation_space
            low = np.concatenate([space.low, space.low])
            high = np.concatenate([space.high, space.high])
            self.observation_space = gymnasium.spaces.Box(low, high, dtype=space.dtype)
            base = env.unwrapped
            # Only OGBench's manipulation envs build their action space per access (and settle
            # goals with it); other envs keep theirs.
            if self.seed_goal and not hasattr(base, "_qgf_fresh_action_space"):
                if isinstance(getattr(type(base), "action_space", None), property):
                    base.__class__ = _seedable_action_space_class(type(base))

        def reset(self, *, seed=None, options=None):
            options = {**(options or {}), "task_id": self.task_id, "render_goal": False}
            base = self.env.unwrapped
            if self.seed_goal and seed is not None and hasattr(base, "_qgf_fresh_action_space"):
                space = base._qgf_fresh_action_space()
                space.seed(int(seed))
                base._qgf_pinned_action_space = space
            try:
                observation, info = self.env.reset(seed=seed, options=options)
            finally:
                base.__dict__.pop("_qgf_pinned_action_space", None)
            self._goal = np.asarray(info["goal"], dtype=observation.dtype)
            return np.concatenate([observation, self._goal]), info

        def step(self, action):
            observation, reward, terminated, truncated, info = self.env.step(action)
            return np.concatenate([observation, self._goal]), reward, terminated, truncated, info

    return GoalTaskEnv


def make_goal_env(name: str, task_id: int, *, seed_goal: bool = False, **env_kwargs):
    """OGBench's goal-conditioned env for `name` (`puzzle-3x3-play-v0` or `puzzle-3x3-v0`) at
    evaluation goal `task_id`, observations concatenated with the goal (`GoalTaskEnv`).
    `seed_goal=True` makes a seeded reset's goal observation a function of the seed (see
    `GoalTaskEnv`); qgf's evaluation uses it."""
    parsed = parse_name(name)
    if parsed.singletask:
        raise QGFError(
            f"{name} is a single-task name; a goal-conditioned evaluation needs the goal-conditioned "
            f"env, e.g. {parsed.goal_env_name}"
        )
    return _goal_task_wrapper()(make_env(name, **env_kwargs), task_id, seed_goal=seed_goal)
