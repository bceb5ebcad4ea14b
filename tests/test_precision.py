"""The matmul-precision setting: traced into the agent's programs, recorded with the run, and left
out of sweep run names while it holds its default (so no existing sweep run is renamed)."""

import jax
import jax.numpy as jnp
import pytest

from helpers import make_dataset, small_config
from qgf.agents import agent_class
from qgf.data.chunks import to_device
from qgf.errors import QGFError
from qgf.guidance import SamplerSpec


def dot_precisions(closed_jaxpr) -> set[str]:
    """The precision parameter of every dot_general in a traced program, nested programs included."""
    found = set()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.add(str(eqn.params["precision"]))
            for value in eqn.params.values():
                for inner in value if isinstance(value, list | tuple) else [value]:
                    if hasattr(inner, "jaxpr"):  # ClosedJaxpr
                        visit(inner.jaxpr)
                    elif hasattr(inner, "eqns"):  # Jaxpr
                        visit(inner)

    visit(closed_jaxpr.jaxpr)
    return found


@pytest.mark.parametrize("precision", ["default", "highest"])
def test_the_setting_reaches_every_matmul_of_the_update_and_the_sampler(precision):
    config = small_config(matmul_precision=precision)
    agent = agent_class("qgf").create(0, 4, 2, config)
    data = to_device(make_dataset())
    update = jax.make_jaxpr(lambda a: a.update_many(data, 1))(agent)
    observations = jnp.zeros((2, 4))
    spec = SamplerSpec("qgf", steps=2)
    sample = jax.make_jaxpr(lambda a: a.sample_actions(observations, jax.random.key(0), 0.1, spec))(agent)
    for text in (update, sample):
        found = dot_precisions(text)
        assert found, "no matmul found in the traced program"
        if precision == "default":
            assert found == {"None"}  # exactly what was traced before the setting existed
        else:
            assert all("HIGHEST" in value for value in found), found


def test_the_setting_is_recorded_validated_and_part_of_the_identity():
    config = small_config(matmul_precision="high")
    assert config.to_dict()["matmul_precision"] == "high"
    assert small_config().identity_diff(config) == {"matmul_precision": ("default", "high")}
    with pytest.raises(QGFError, match="did you mean 'highest'"):
        small_config(matmul_precision="higest")


def test_sweep_run_names_leave_the_default_precision_out():
    from qgf.experiments.naming import _config_identity

    assert "matmul_precision" not in _config_identity(small_config())
    assert _config_identity(small_config(matmul_precision="highest"))["matmul_precision"] == "highest"


def test_the_precision_in_force_is_recorded_in_meta_and_reaches_the_gate(tmp_path):
    import numpy as np

    from qgf import checkpoint
    from qgf.precision import precision_in_force

    assert precision_in_force("high")["in_force"] == "high"
    assert precision_in_force("default")["in_force"] == "default"
    with jax.default_matmul_precision("highest"):  # JAX's process-wide default, e.g. from the env
        recorded = precision_in_force("default")
    assert (recorded["jax_default_matmul_precision"], recorded["in_force"]) == ("highest", "highest")
    config = small_config(matmul_precision="highest")
    meta = checkpoint.create_run(tmp_path / "run", config, obs_dim=4, action_dim=2)
    assert meta["matmul_precision"]["setting"] == "highest" and meta["matmul_precision"]["backend"] == "cpu"
    agent = agent_class("qgf").create(0, 4, 2, config)
    gated = SamplerSpec("qgf", steps=2, gate=0.5)
    traced = jax.make_jaxpr(lambda o: agent.sample_actions(o, jax.random.key(0), 0.3, gated))(
        np.zeros((1, 4), np.float32)
    )
    found = dot_precisions(traced)
    assert found and all("HIGHEST" in value for value in found), found
