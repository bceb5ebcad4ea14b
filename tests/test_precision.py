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
    from qgf.experiments.jobs import _config_identity

    assert "matmul_precision" not in _config_identity(small_config())
    assert _config_identity(small_config(matmul_precision="highest"))["matmul_precision"] == "highest"
