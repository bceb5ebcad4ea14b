"""Networks against forward passes written out in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf.critics.networks import QEnsemble, ValueNetwork
from qgf.flow import VelocityField
from qgf.nets import MLP, Ensemble, count_params, time_features


def numpy_gelu(x):
    # tanh approximation (Hendrycks & Gimpel), the variant flax.linen.gelu uses by default
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def numpy_layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def numpy_mlp(params, x, num_hidden, layer_norm=True):
    """Forward pass from a flax MLP's parameter dict: Dense -> LayerNorm -> GELU, then Dense."""
    for i in range(num_hidden):
        dense = params[f"Dense_{i}"]
        x = x @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
        if layer_norm:
            norm = params[f"LayerNorm_{i}"]
            x = numpy_layer_norm(x, np.asarray(norm["scale"]), np.asarray(norm["bias"]))
        x = numpy_gelu(x)
    out = params[f"Dense_{num_hidden}"]
    return x @ np.asarray(out["kernel"]) + np.asarray(out["bias"])


def randomize(params, seed=1):
    """Replace every parameter by random values so LayerNorm scale/bias are not the trivial 1/0."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [0.5 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    )


@pytest.mark.parametrize("layer_norm", [True, False])
def test_mlp_matches_numpy_forward(layer_norm):
    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    mlp = MLP((16, 8), 3, layer_norm=layer_norm)
    params = randomize(jax.jit(mlp.init)(jax.random.PRNGKey(0), x))
    out = np.asarray(jax.jit(mlp.apply)(params, x))
    assert out.shape == (5, 3)
    expected = numpy_mlp(params["params"], x.astype(np.float64), 2, layer_norm)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert ("LayerNorm_0" in params["params"]) == layer_norm


def test_ensemble_members_are_independent_mlps():
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    ensemble = Ensemble((8, 8), 2, num_members=3)
    params = jax.jit(ensemble.init)(jax.random.PRNGKey(0), x)
    out = np.asarray(jax.jit(ensemble.apply)(params, x))
    assert out.shape == (3, 4, 2)
    members = params["params"]["members"]
    for k in range(3):
        member = jax.tree_util.tree_map(lambda leaf, k=k: leaf[k], members)
        np.testing.assert_allclose(out[k], numpy_mlp(member, x, 2), rtol=1e-4, atol=1e-5)
    # Members are initialised independently (otherwise min over heads is a no-op).
    assert not np.allclose(out[0], out[1])


def test_sinusoidal_time_features_formula():
    t = np.array([0.0, 0.1, 0.55, 1.0], np.float32)
    features = np.asarray(time_features(jnp.asarray(t), "sinusoidal", 8))
    frequencies = np.array([1.0, 10.0, 100.0, 1000.0])  # 4 frequencies geometric from 1 to 1000
    angles = t[:, None].astype(np.float64) * frequencies[None]
    expected = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    np.testing.assert_allclose(features, expected, atol=2e-4)
    np.testing.assert_array_equal(np.asarray(time_features(jnp.asarray(t), "raw", 8)), t[:, None])


def test_rows_are_independent():
    """Guidance takes grad(sum(q)) for per-row gradients: no network may mix rows."""
    rng = np.random.default_rng(2)
    obs, act = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    t = np.array([0.1, 0.5, 0.9], np.float32)
    velocity = VelocityField((16, 16), 4)
    critic = QEnsemble((16, 16), 2)
    v_params = jax.jit(velocity.init)(jax.random.PRNGKey(0), obs, act, t)
    q_params = jax.jit(critic.init)(jax.random.PRNGKey(1), obs, act)
    obs2, act2 = obs.copy(), act.copy()
    obs2[1:] += 3.0
    act2[1:] -= 2.0
    np.testing.assert_allclose(
        jax.jit(velocity.apply)(v_params, obs, act, t)[0],
        jax.jit(velocity.apply)(v_params, obs2, act2, t)[0],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        jax.jit(critic.apply)(q_params, obs, act)[:, 0], jax.jit(critic.apply)(q_params, obs2, act2)[:, 0]
    )


def test_output_shapes_and_parameter_count():
    # shapes only: jax.eval_shape traces without compiling
    obs, act, t = jnp.zeros((2, 5)), jnp.zeros((2, 6)), jnp.zeros((2,))
    critic = QEnsemble((16, 8), num_critics=2)
    value = ValueNetwork((16, 8))
    velocity = VelocityField((16, 8), 6, time_embedding="sinusoidal", time_embedding_dim=4)
    q_params = jax.eval_shape(critic.init, jax.random.PRNGKey(0), obs, act)
    assert jax.eval_shape(critic.apply, q_params, obs, act).shape == (2, 2)
    v_params = jax.eval_shape(value.init, jax.random.PRNGKey(0), obs)
    assert jax.eval_shape(value.apply, v_params, obs).shape == (2,)
    a_params = jax.eval_shape(velocity.init, jax.random.PRNGKey(0), obs, act, t)
    assert jax.eval_shape(velocity.apply, a_params, obs, act, t).shape == (2, 6)

    def mlp_count(n_in, hidden, n_out):  # dense weights + biases, LayerNorm scale + bias
        dims = [n_in, *hidden, n_out]
        dense = sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True))
        return dense + sum(2 * h for h in hidden)

    assert count_params(q_params) == 2 * mlp_count(11, (16, 8), 1)
    assert count_params(v_params) == mlp_count(5, (16, 8), 1)
    assert count_params(a_params) == mlp_count(5 + 6 + 4, (16, 8), 6)


@pytest.mark.parametrize("style", ["authors-policy", "authors-critic"])
def test_authors_mlp_styles_match_numpy_forward_and_init(style):
    """The QGF authors' MLP (utils/networks.py): a policy's has no LayerNorm on its last hidden layer
    (their MLP with activate_final=True); a critic's MLP ends in its width-1 layer, so every hidden
    layer has LayerNorm. Kernels: variance scaling 1 over fan_avg, uniform, in hidden layers (and in a
    critic's output layer); a policy's output layer is flax's lecun normal."""
    widths, inputs, outputs = (256, 256, 256), 300, 200
    mlp = MLP(widths, outputs, layer_norm=True, style=style)
    x = np.random.default_rng(2).normal(size=(3, inputs)).astype(np.float32)
    params = jax.jit(mlp.init)(jax.random.PRNGKey(0), x)["params"]
    norms = sorted(name for name in params if name.startswith("LayerNorm"))
    assert norms == (
        ["LayerNorm_0", "LayerNorm_1"] if style == "authors-policy" else [f"LayerNorm_{i}" for i in range(3)]
    )
    fans = [(inputs, 256), (256, 256), (256, 256), (256, outputs)]
    for i, (fan_in, fan_out) in enumerate(fans):
        kernel = np.asarray(params[f"Dense_{i}"]["kernel"], np.float64)
        assert not np.any(np.asarray(params[f"Dense_{i}"]["bias"]))
        if i < 3 or style == "authors-critic":  # U(-l, l), l = sqrt(3 / fan_avg): variance 2 / (in + out)
            limit = np.sqrt(3.0 / ((fan_in + fan_out) / 2))
            assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.98 * limit
            np.testing.assert_allclose(kernel.var(), 2.0 / (fan_in + fan_out), rtol=0.05)
        else:  # lecun normal: truncated normal with variance 1 / fan_in
            np.testing.assert_allclose(kernel.var(), 1.0 / fan_in, rtol=0.05)
            assert np.abs(kernel).max() > np.sqrt(3.0 / fan_in)  # not the uniform init
    # forward: Dense -> [LayerNorm] -> GELU per hidden layer, then Dense
    small = MLP((16, 8), 3, layer_norm=True, style=style)
    x = x[:, :7]
    small_params = randomize(jax.jit(small.init)(jax.random.PRNGKey(0), x))["params"]
    h = x.astype(np.float64)
    for i in range(2):
        h = h @ np.asarray(small_params[f"Dense_{i}"]["kernel"]) + np.asarray(
            small_params[f"Dense_{i}"]["bias"]
        )
        if f"LayerNorm_{i}" in small_params:
            norm = small_params[f"LayerNorm_{i}"]
            h = numpy_layer_norm(h, np.asarray(norm["scale"]), np.asarray(norm["bias"]))
        h = numpy_gelu(h)
    expected = h @ np.asarray(small_params["Dense_2"]["kernel"]) + np.asarray(small_params["Dense_2"]["bias"])
    np.testing.assert_allclose(
        np.asarray(jax.jit(small.apply)({"params": small_params}, x)), expected, rtol=1e-4, atol=1e-5
    )


def test_network_style_reaches_every_network_and_default_is_unchanged():
    """network_style=authors with actor_layer_norm=false gives the authors' FQL networks; the default
    config builds exactly the parameters it built before the setting existed (lecun init, LN everywhere)."""
    from qgf.agents import agent_class
    from qgf.config import load_preset

    def names(tree):
        return sorted(
            "/".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)
        )

    base = load_preset("tiny", {"agent": "fql"})
    authors = load_preset("tiny", {"agent": "fql", "network_style": "authors", "actor_layer_norm": False})
    agent = agent_class("fql").create(0, 4, 2, authors)
    for network in ("actor", "onestep"):
        assert not any("LayerNorm" in name for name in names(agent.params[network])), network
    hidden = len(authors.critic_hidden_dims)
    critic_norms = {name.split("/")[-2] for name in names(agent.params["critic"]) if "LayerNorm" in name}
    assert critic_norms == {f"LayerNorm_{i}" for i in range(hidden)}
    reference = agent_class("fql").create(0, 4, 2, base)
    plain = MLP(base.actor_hidden_dims, reference.chunk_dim)  # the MLP as it was: no style argument
    assert names(reference.params["onestep"]["params"]["MLP_0"]) == names(
        plain.init(jax.random.PRNGKey(0), jnp.zeros((1, 4 + reference.chunk_dim)))["params"]
    )
