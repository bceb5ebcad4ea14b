"""Online QGF with critic=td backs up on the guided policy's own actions: the TD target against an
independent float64 computation, offline training bit-identical to a plain BC-sample backup."""

import jax
import numpy as np

from helpers import equal_trees, make_dataset, small_config
from qgf.agents import agent_class
from qgf.agents.qgf import QGFAgent
from qgf.data.chunks import sample_chunks, to_device
from qgf.flow import flow_policy_actions
from qgf.guidance import sample
from qgf.guidance.estimators import SamplerSpec
from qgf.online import with_acting_backup

WEIGHT, RHO = 3.0, 0.5


class PlainBackupQGF(QGFAgent):
    """main's qgf agent before the online backup: a td critic bootstraps on the BC flow's samples."""

    def backup_actions(self, params, observations, key):
        return flow_policy_actions(self.velocity_from(params), observations, key, self.config, self.chunk_dim)


def _trained(cls=QGFAgent, steps=30, **overrides):
    config = small_config(agent="qgf", critic="td", critic_pessimism=RHO, **overrides)
    dataset = make_dataset()
    agent = cls.create(0, dataset.observations.shape[1], dataset.actions.shape[1], config)
    data = to_device(dataset)
    agent, _ = agent.update_many(data, steps)
    return agent, data


def test_td_target_bootstraps_on_the_guided_sample_of_the_same_key():
    agent, data = _trained()
    config = agent.config
    spec = SamplerSpec("qgf", steps=config.flow_steps)
    guided = with_acting_backup(agent, spec, WEIGHT)
    assert guided.backup_sampler == (spec, WEIGHT)
    batch = sample_chunks(data, jax.random.PRNGKey(1), 32, config.horizon, config.discount)
    key = jax.random.PRNGKey(2)
    _, metrics = guided.losses(guided.params, batch, key)

    # independent: a' from qgf.guidance.sample with the loss's backup key, the target in float64
    _, next_key = jax.random.split(key)
    next_obs = batch["next_observations"]
    extras = {"q_heads": agent.q_heads_fn}
    a_next = sample(
        agent.behavior_velocity_fn,
        agent.q_fn,
        next_obs,
        next_key,
        WEIGHT,
        spec,
        agent.chunk_dim,
        extras=extras,
    )
    heads = np.asarray(agent.q_values(next_obs, a_next, target=True), np.float64)  # (K, B)
    bootstrap = heads.mean(axis=0) - RHO * heads.std(axis=0)
    rewards, masks = np.asarray(batch["rewards"], np.float64), np.asarray(batch["masks"], np.float64)
    targets = rewards + config.discount**config.horizon * masks * bootstrap
    weights = np.asarray(batch["valid"][:, -1], np.float64)
    q = np.asarray(agent.q_values(batch["observations"], batch["actions"]), np.float64)
    loss = np.mean([np.sum(weights * (head - targets) ** 2) / max(weights.sum(), 1.0) for head in q])
    np.testing.assert_allclose(float(metrics["td_target_mean"]), targets.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["critic_loss"]), loss, rtol=1e-5, atol=1e-7)

    # the unguided backup (offline) is a different target: the test can tell them apart
    _, plain = agent.losses(agent.params, batch, key)
    unguided = flow_policy_actions(agent.behavior_velocity_fn, next_obs, next_key, config, agent.chunk_dim)
    assert not np.allclose(np.asarray(unguided), np.asarray(a_next), atol=1e-4)
    assert abs(float(plain["td_target_mean"]) - targets.mean()) > 1e-6


def test_offline_training_is_bit_identical_to_the_plain_bc_backup():
    agent, data = _trained(steps=40)
    reference, _ = _trained(PlainBackupQGF, steps=40)
    assert agent.backup_sampler is None
    assert equal_trees(agent.params, reference.params)
    assert equal_trees(agent.opt_state, reference.opt_state)
    # and the field is read by the compiled update: the guided backup trains another critic
    spec = SamplerSpec("qgf", steps=agent.config.flow_steps)
    guided, _ = with_acting_backup(agent, spec, WEIGHT).update_many(data, 5)
    plain, _ = agent.update_many(data, 5)
    assert not equal_trees(guided.params["critic"], plain.params["critic"])
    assert equal_trees(guided.params["actor"], plain.params["actor"])  # the BC loss ignores it


def test_only_online_qgf_with_a_td_critic_gets_the_acting_backup():
    spec = SamplerSpec("qgf", steps=4)
    config = small_config(agent="qgf", critic="iql")
    iql = QGFAgent.create(0, 4, 2, config)
    assert with_acting_backup(iql, spec, WEIGHT) is iql  # in-sample: no next actions
    td = QGFAgent.create(0, 4, 2, small_config(agent="qgf", critic="td"))
    assert with_acting_backup(td, SamplerSpec("policy"), WEIGHT) is td  # acting unguided
    fql = agent_class("fql").create(0, 4, 2, small_config(agent="fql", critic="td"))
    assert with_acting_backup(fql, spec, WEIGHT) is fql  # its own policy is what it backs up on
