"""A fixed analytic critic written into the shared critic network's own parameters.

    Q(s, a) = -scale * sum_i phi(a_i - c_i),
    phi(z) = gelu(z) + gelu(-z) = z tanh(sqrt(2/pi) (z + 0.044715 z^3))

phi is even and convex with phi(0) = 0 (about 0.8 z^2 near 0, |z| far out), so Q is concave in the
action chunk a, ignores the observation and has its one maximum at a = c. `toy_critic_params` sets
the weights of `qgf.critics.QEnsemble` (Dense -> LayerNorm -> GELU, two hidden layers, every head
alike) so that the network computes exactly this to float32 rounding:

- layer 1: units (2i, 2i+1) carry +-(a_i - c_i); the other units carry a constant +-BIG pattern
  that fixes the LayerNorm's mean (0) and variance (BIG^2 * share), so its scale undoes the
  normalisation; the pattern units get scale 0 (output gelu(0) = 0). GELU gives gelu(+-z_i);
- layer 2: one unit sums them to y = sum_i phi(z_i) (and a mirror unit -y keeps the mean at 0),
  shifted by OFFSET into GELU's linear range (gelu(y + 10) = y + 10 in float32);
- output: -scale * (y + OFFSET) + scale * OFFSET.

Because it is only parameters, an agent trains against it with its own compiled update (no new
compilation): `train_against` writes it into the online and target critic before every step (the
critic's own update would move it), so every policy step ascends exactly this Q. scale = 0 gives
Q = 0: the agent's own updates with the Q term off.
"""

import jax
import jax.numpy as jnp
import numpy as np

BIG = 1.0e4  # the LayerNorm pattern's magnitude: a_i's share of the variance is below float32's eps
OFFSET = 10.0  # moves the second layer into GELU's linear range


def phi(z):
    """gelu(z) + gelu(-z) with flax's (tanh) GELU, numpy float64."""
    z = np.asarray(z, np.float64)
    return z * np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3))


def toy_q(actions, center, scale):
    """The analytic Q of (B, d) actions, numpy float64 (B,)."""
    return -scale * phi(np.asarray(actions, np.float64) - np.asarray(center, np.float64)).sum(axis=-1)


def _pattern(width: int) -> np.ndarray:
    signs = np.where(np.arange(width) % 2 == 0, 1.0, -1.0)
    return BIG * signs  # equal numbers of + and - (width even): mean exactly 0


def toy_critic_params(template, obs_dim: int, center, scale: float):
    """Parameters shaped like `template` (a QEnsemble's, heads stacked on axis 0) that compute
    Q(s, a) = -scale * sum_i phi(a_i - center_i) in every head."""
    members = template["params"]["Ensemble_0"]["members"]
    heads, inputs, width = members["Dense_0"]["kernel"].shape
    second = members["Dense_1"]["kernel"].shape[-1]
    center = np.asarray(center, np.float64)
    d = len(center)
    assert inputs == obs_dim + d and width >= 2 * d + 2 and width % 2 == 0 and second % 2 == 0

    kernel0, bias0 = np.zeros((inputs, width)), np.zeros(width)
    pattern0 = _pattern(width - 2 * d)
    for i in range(d):
        kernel0[obs_dim + i, 2 * i], kernel0[obs_dim + i, 2 * i + 1] = 1.0, -1.0
        bias0[2 * i], bias0[2 * i + 1] = -center[i], center[i]
    bias0[2 * d :] = pattern0
    sigma0 = np.sqrt(np.mean(np.square(pattern0)) * (width - 2 * d) / width)
    scale0 = np.where(np.arange(width) < 2 * d, sigma0, 0.0)

    kernel1, bias1 = np.zeros((width, second)), np.zeros(second)
    kernel1[: 2 * d, 0], kernel1[: 2 * d, 1] = 1.0, -1.0
    pattern1 = _pattern(second - 2)
    bias1[2:] = pattern1
    sigma1 = np.sqrt(np.mean(np.square(pattern1)) * (second - 2) / second)
    scale1, layer_bias1 = np.zeros(second), np.zeros(second)
    scale1[0], layer_bias1[0] = sigma1, OFFSET

    kernel2, bias2 = np.zeros((second, 1)), np.array([scale * OFFSET])
    kernel2[0, 0] = -scale

    def heads_of(x):
        return jnp.asarray(np.broadcast_to(x, (heads, *x.shape)), jnp.float32)

    layers = {
        "Dense_0": {"kernel": kernel0, "bias": bias0},
        "LayerNorm_0": {"scale": scale0, "bias": np.zeros(width)},
        "Dense_1": {"kernel": kernel1, "bias": bias1},
        "LayerNorm_1": {"scale": scale1, "bias": layer_bias1},
        "Dense_2": {"kernel": kernel2, "bias": bias2},
    }
    built = {"params": {"Ensemble_0": {"members": jax.tree.map(heads_of, layers)}}}
    assert jax.tree.structure(built) == jax.tree.structure(template)
    return built


def with_critic(agent, critic_params):
    """`agent` with `critic_params` as its online and target critic."""
    return agent.replace(
        params={**agent.params, "critic": critic_params},
        target_params={**agent.target_params, "critic": critic_params},
    )


def train_against(agent, critic_params, device_data, steps: int):
    """`steps` updates of `agent`, each after writing `critic_params` into its critic; returns the
    agent and the per-step metrics (list of dicts of floats)."""
    history = []
    for _ in range(steps):
        agent, metrics = with_critic(agent, critic_params).update_many(device_data, 1)
        history.append(metrics)
    history = [{k: float(v) for k, v in m.items()} for m in jax.device_get(history)]
    return agent, history
