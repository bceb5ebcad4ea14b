"""A trained run as a policy: the run's agent plus the add-ons its samplers need, compiled into
samplers. The one place that assembles "run + add-ons -> sampler": evaluation (`AgentPolicy`, the
rollout's `PolicyFn`), the offline weight choice (`RunPolicy.scored_actions`), analysis
(`RunPolicy.extras`) and export (`qgf.deploy`, through `actions_function`) get their policy here.

    policy = RunPolicy.for_run(run, specs)     # checks the samplers, loads their add-ons
    actions = policy.actions(observations, key, weight, spec)   # the compiled sampler, (B, d)
    acting = policy.acting(conditions)         # evaluation: per-row noise keys, padded batches
    actions, q = policy.scored_actions(observations, noise, key, weights, spec)   # one batch
    extras = policy.extras()                   # the add-on callables for `qgf.guidance`

`use_compilation_cache` (`qgf.compilation`) keeps the compiled programs on disk between processes
(`qgf evaluate` turns it on). Imports JAX (inside the functions that compile, so importing this
module stays light), `qgf.guidance`, `qgf.addons`, `qgf.agents.base` and `qgf.evaluation.rollout`
(`PolicyOutput`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

# The persistent compilation cache lives in `qgf.compilation` (the deploy loader uses it too);
# re-exported here, where evaluation and bench/ have always found it.
from qgf.compilation import COMPILATION_CACHE_ENV, default_compilation_cache, use_compilation_cache  # noqa: F401
from qgf.errors import QGFError
from qgf.evaluation.rollout import PolicyOutput
from qgf.precision import matmul_precision, with_agent_precision


def check_run_samplers(run: Any, specs: Sequence[Any]) -> dict[str, Any]:
    """Check that the run can sample every spec (a behaviour flow for the guided samplers; the
    add-ons that robustq, cfgrl and the distill samplers need) and return those add-ons, loaded:
    {name: `qgf.addons.base.LoadedAddon`}. A missing add-on is a one-line QGFError naming the
    command that trains it. Estimator names are accepted for `specs` too."""
    from qgf.addons import load_addons
    from qgf.agents.base import check_sampler
    from qgf.guidance.estimators import SamplerSpec

    specs = list(dict.fromkeys(specs))
    for spec in specs:
        if not isinstance(spec, SamplerSpec):
            spec = SamplerSpec(estimator=spec, steps=run.config.flow_steps)
        check_sampler(run.agent, spec)
    return load_addons(run, specs)


def actions_function(spec: Any, addons: Mapping[str, Any] | None = None) -> Callable:
    """The pure ``(agent, addon_states, observations (B, D), key, weight) -> actions (B, d)`` of
    sampler `spec`: the method's own policy or the guided behaviour flow (`Agent.sample_actions`),
    or, for a sampler that needs an add-on, `qgf.guidance.sample` with the add-ons' callables
    (`addons`: {name: LoadedAddon}, their states in `addon_states`). The one definition that
    evaluation (per row), `RunPolicy.actions` (compiled) and `qgf.deploy` (exported) trace."""
    addons = dict(addons or {})

    def act(agent, addon_states, observations, key, weight):
        if not spec.needs:
            return agent.sample_actions(observations, key, weight, spec)
        extras = {}
        for name, loaded in addons.items():
            extras.update(loaded.extras(agent, addon_states[name]))
        with matmul_precision(agent.config.matmul_precision):
            return agent.guided_actions(observations, key, weight, spec, extras)

    return act


@dataclasses.dataclass
class RunPolicy:
    """A run's agent and the loaded add-ons (`qgf.addons.base.LoadedAddon`, by name) that its
    samplers need."""

    agent: Any
    addons: dict[str, Any] = dataclasses.field(default_factory=dict)
    _compiled: dict[Any, Callable] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def for_run(cls, run: Any, specs: Sequence[Any]) -> RunPolicy:
        """The policy of a loaded run for samplers `specs` (`SamplerSpec`s or estimator names):
        checked against the run, with the add-ons they need loaded."""
        return cls(run.agent, check_run_samplers(run, specs))

    def extras(self, agent: Any = None) -> dict[str, Callable]:
        """The add-ons' named callables for `qgf.guidance` (``extras=``), each with its own state,
        against `agent` (default the run's own)."""
        agent = self.agent if agent is None else agent
        extras: dict[str, Callable] = dict(agent.guidance_extras)
        for loaded in self.addons.values():
            extras.update(loaded.extras(agent))
        return extras

    def addon_states(self) -> dict[str, Any]:
        """The loaded add-ons' parameters by name (the ``addon_states`` of `actions_function`)."""
        return {name: loaded.state for name, loaded in self.addons.items()}

    def actions(self, observations, key, weight, spec) -> Any:
        """Actions (B, d) of sampler `spec` for one batch, from `key` (as `Agent.sample_actions`):
        the in-library compiled sampler, compiled once per spec and shapes."""
        if spec not in self._compiled:
            import jax

            self._compiled[spec] = jax.jit(actions_function(spec, self.addons))
        return self._compiled[spec](self.agent, self.addon_states(), observations, key, weight)

    def acting(self, conditions: Sequence[Any]) -> AgentPolicy:
        """The rollout's `PolicyFn` over `conditions` (`qgf.evaluation.conditions.Condition`)."""
        return AgentPolicy(self.agent, conditions, self.addons)

    def scored_actions(self, observations, noise, key, weights, spec) -> tuple[Any, Any]:
        """One batch of actions of sampler `spec` from the given a_0 `noise` (common random
        numbers across weights), and the critic's Q of each: ((B, d), (B,)). `weights` is (B,).
        Add-on-free samplers compile once per spec and shapes for every run of one configuration
        (the agent is an argument)."""
        if self.addons:
            return _scored_with_addons(self.agent, self.addons, observations, noise, key, weights, spec)
        return _scored_sampler()(self.agent, observations, noise, key, weights, spec)


@functools.cache
def _scored_sampler():
    """The jitted (agent, obs, noise, key, weights, spec) -> (actions, Q(obs, actions)); the agent
    is an argument, so runs of one configuration share a compilation."""
    import jax

    from qgf.guidance.sampler import sample_with_info

    @functools.partial(jax.jit, static_argnames=("spec",))
    @with_agent_precision
    def run(agent, observations, noise, key, weights, spec):
        q_fn = agent.q_fn
        actions, _ = sample_with_info(
            agent.behavior_velocity_fn,
            q_fn if spec.uses_critic else None,
            observations,
            key,
            weights,
            spec,
            agent.chunk_dim,
            noise=noise,
            extras=agent.guidance_extras,
        )
        return actions, q_fn(observations, actions)

    return run


def _scored_with_addons(agent, addons, observations, noise, key, weights, spec):
    import jax

    from qgf.guidance.sampler import sample_with_info

    states = {name: loaded.state for name, loaded in addons.items()}

    @jax.jit
    @with_agent_precision
    def run(agent, states, observations, noise, key, weights):
        extras = dict(agent.guidance_extras)
        for name, loaded in addons.items():
            extras.update(loaded.extras(agent, states[name]))
        actions, _ = sample_with_info(
            agent.behavior_velocity_fn,
            agent.q_fn if spec.uses_critic else None,
            observations,
            key,
            weights,
            spec,
            agent.chunk_dim,
            noise=noise,
            extras=extras,
        )
        return actions, agent.q_fn(observations, actions)

    return run(agent, states, observations, noise, key, weights)


# Compiled acting functions of add-on-free samplers, by spec, shared by every AgentPolicy of the
# process (jax.jit caches per agent structure and shapes, so different configs still compile apart).
_SHARED_ACT: dict[Any, Callable] = {}


class AgentPolicy:
    """A `qgf.evaluation.rollout.PolicyFn` over an agent (`qgf.agents`) for a list of
    `qgf.evaluation.conditions.Condition`s.

    Rows are grouped by sampler spec: one compiled call per distinct spec and batch, each row with
    its own weight. Each row draws its noise from its own key (``jax.random.key(noise_seed)``), so
    a row's chunk does not depend on which other rows share the batch. Batches are padded to a fixed
    size so that every spec compiles once.

    Samplers that need an add-on (`qgf.addons`: robustq, cfgrl, qgf-distill, ...) take its
    callables from `addons` ({name: `qgf.addons.base.LoadedAddon`}); `for_run` loads them.
    """

    def __init__(self, agent: Any, conditions: Sequence[Any], addons: Mapping[str, Any] | None = None):
        self.agent = agent
        self.specs = [condition.spec for condition in conditions]
        self.weights = np.array([condition.weight for condition in conditions], np.float32)
        self.batch_size = 1
        self.addons = dict(addons or {})
        self._addon_states = {name: loaded.state for name, loaded in self.addons.items()}
        self._compiled: dict[Any, Callable] = {}

    @classmethod
    def for_run(cls, run: Any, conditions: Sequence[Any]) -> AgentPolicy:
        """The policy of a loaded run, with the add-ons its samplers need loaded with it."""
        return RunPolicy.for_run(run, [c.spec for c in conditions]).acting(conditions)

    def _act(self, spec: Any) -> Callable:
        if spec not in self._compiled:
            import jax

            addons = self.addons
            if not addons and spec in _SHARED_ACT:
                # Another policy of this process (a later sweep job, another run of the same
                # shapes) compiled it already: the agent is an argument, so jax reuses the program.
                shared = _SHARED_ACT[spec]
                self._compiled[spec] = lambda agent, *args: shared(agent, {}, *args)
                return self._compiled[spec]
            sampler = actions_function(spec, addons)

            @with_agent_precision
            def act(agent, addon_states, observations, noise_seeds, weights):
                def one_row(observation, noise_seed, weight):
                    key = jax.random.key(noise_seed)
                    return sampler(agent, addon_states, observation[None], key, weight)[0]

                actions = jax.vmap(one_row)(observations, noise_seeds, weights)
                return actions, agent.q_fn(observations, actions)

            compiled = jax.jit(act)
            if not addons:  # nothing run-specific is closed over: share it with later policies
                _SHARED_ACT[spec] = compiled
            self._compiled[spec] = lambda agent, *args: compiled(agent, self._addon_states, *args)
        return self._compiled[spec]

    def warmup(self, batch_size: int, specs: Sequence[Any] | None = None) -> None:
        """Compile every spec (or only `specs`) for batches of `batch_size` rows."""
        self.batch_size = batch_size
        observations = np.zeros((batch_size, self.agent.obs_dim), np.float32)
        for spec in dict.fromkeys(self.specs if specs is None else specs):
            actions, _ = self._act(spec)(
                self.agent, observations, np.zeros(batch_size, np.uint32), np.zeros(batch_size, np.float32)
            )
            actions.block_until_ready()

    def __call__(self, observations, condition_indices, noise_seeds) -> PolicyOutput:
        rows_total, obs_dim = observations.shape
        if obs_dim != self.agent.obs_dim:
            raise QGFError(
                f"the env's observations have {obs_dim} dims but the run was trained on "
                f"{self.agent.obs_dim}; evaluate on the run's own environment"
            )
        actions = np.empty((rows_total, self.agent.chunk_dim), np.float32)
        q = np.empty(rows_total, np.float64)
        seconds = np.empty(rows_total, np.float64)
        by_spec: dict[Any, list[int]] = {}
        for row, condition in enumerate(condition_indices):
            by_spec.setdefault(self.specs[condition], []).append(row)
        for spec, rows in by_spec.items():
            size = max(self.batch_size, len(rows))
            padded = np.concatenate([rows, np.full(size - len(rows), rows[0])]).astype(np.int64)
            start = time.perf_counter()
            spec_actions, spec_q = self._act(spec)(
                self.agent,
                observations[padded],
                noise_seeds[padded],
                self.weights[condition_indices[padded]],
            )
            actions[rows] = np.asarray(spec_actions)[: len(rows)]
            q[rows] = np.asarray(spec_q)[: len(rows)]
            seconds[rows] = (time.perf_counter() - start) / len(rows)
        return PolicyOutput(actions, q, seconds)
