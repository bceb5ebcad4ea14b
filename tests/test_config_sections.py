"""Config sections (qgf.config, qgf.sections) and agent discovery (qgf.agents): flat keys, what a key
of a section that does not apply does, the identity of a run, and the worked example of
docs/architecture.md ("Adding an agent") followed step by step."""

import dataclasses
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import qgf.agents
from helpers import SMALL, make_dataset, small_config
from qgf import checkpoint as ckpt
from qgf import cli
from qgf import config as config_module
from qgf.agents import agent_class, agent_sections
from qgf.config import TrainConfig, help_sections, load_preset, parse_overrides
from qgf.errors import QGFError
from qgf.experiments.naming import run_groups
from qgf.experiments.spec import parse_spec
from qgf.training import fit as training_fit
from qgf.training import runs as training_runs

DOCS = Path(__file__).parents[1] / "docs" / "architecture.md"
TASK = "cube-single-play-singletask-task1-v0"
pytestmark = pytest.mark.filterwarnings("ignore:log_every=2")


def test_a_config_holds_the_sections_that_apply_and_keeps_flat_keys():
    fql = TrainConfig(agent="fql", fql_alpha=30.0)
    assert fql.fql_alpha == 30.0 and fql.section("fql").fql_alpha == 30.0
    assert [type(values).__name__ for values in fql.sections] == [
        "FqlSettings",
        "QTermSettings",
        "PolicyOptimiserSettings",
    ]
    assert {"fql_alpha", "normalize_q_loss", "actor_grad_clip"} <= set(fql.to_dict())
    assert "dac_alpha" not in fql.to_dict() and "critic_pessimism" not in fql.to_dict()
    assert TrainConfig(agent="fql", critic="td").critic_pessimism == 0.5
    assert parse_overrides(["fql_alpha=300", "dqc_horizon=7"]) == {"fql_alpha": 300.0, "dqc_horizon": 7}
    with pytest.raises(dataclasses.FrozenInstanceError):
        fql.batch_size = 3
    assert pickle.loads(pickle.dumps(fql)) == fql
    assert hash(fql) == hash(TrainConfig(agent="fql", fql_alpha=30.0))
    changed = dataclasses.replace(fql, fql_alpha=5.0)
    assert (changed.fql_alpha, changed.agent) == (5.0, "fql") and fql.replace(fql_alpha=5.0) == changed
    assert TrainConfig.from_dict(fql.to_dict()) == fql


def test_a_key_of_a_section_that_does_not_apply_is_checked_then_ignored():
    """fql_alpha on a qgf run: accepted (so sweep grids and shared overrides may set it), checked
    like anywhere else, and dropped: the config, its hash and its config.json are unchanged."""
    ignored = TrainConfig(fql_alpha=3.0, critic_pessimism=0.1, dqc_horizon=2, value_goal_p_cur=0.9)
    assert ignored == TrainConfig() and hash(ignored) == hash(TrainConfig()) and ignored.sections == ()
    assert ignored.to_dict() == TrainConfig().to_dict() and "fql_alpha" not in ignored.to_dict()
    with pytest.raises(AttributeError, match="section 'fql', which applies to agent fql only"):
        _ = ignored.fql_alpha
    with pytest.raises(QGFError, match="does not apply"):
        ignored.section("fql")
    with pytest.raises(QGFError, match="fql_alpha must be >= 0, got -1.0"):
        TrainConfig(fql_alpha=-1.0)
    with pytest.raises(QGFError, match="bad value 'x' for dac_alpha: expected float"):
        TrainConfig(dac_alpha="x")
    with pytest.raises(QGFError, match="did you mean 'fql_alpha'"):
        TrainConfig(fql_alhpa=1.0)
    # switching the agent brings the new agent's sections at their defaults (or as given)
    assert TrainConfig().replace(agent="fql").fql_alpha == 300.0
    assert TrainConfig(fql_alpha=3.0).replace(agent="fql", fql_alpha=4.0).fql_alpha == 4.0


def test_identity_covers_only_the_sections_that_apply(tmp_path):
    stored = small_config()
    assert stored.identity_diff(small_config(fql_alpha=1.0, qam_edit_sigma=0.3)) == {}
    training_runs.check_same_config(tmp_path, stored, small_config(fql_alpha=1.0))  # a qgf run resumes
    fql = small_config(agent="fql")
    assert fql.identity_diff(small_config(agent="fql", fql_alpha=1.0)) == {"fql_alpha": (1000.0, 1.0)}
    assert small_config(agent="fql").identity_diff(small_config(agent="edp")) == {"agent": ("fql", "edp")}
    with pytest.raises(QGFError, match=r"different config \(fql_alpha=1000.0 \(run\) vs 1.0"):
        training_runs.check_same_config(tmp_path, fql, small_config(agent="fql", fql_alpha=1.0))


def sweep_document(**overrides):
    return {
        "name": "sections",
        "preset": "tiny",
        "seeds": [0],
        "tasks": [TASK],
        "overrides": {"steps": 4, **overrides},
        "data": {"episodes": 2},
        "agents": [{"name": "qgf"}, {"name": "fql", "grid": {"fql_alpha": [10.0, 100.0]}}],
        "evaluation": {"episodes": 1, "weights": [0.0], "workers": 0},
    }


def test_sweep_run_names_ignore_keys_that_do_not_apply():
    names = [group.name for group in run_groups(parse_spec(sweep_document()))]
    document = sweep_document(dac_alpha=5.0, qam_edit_sigma=0.2)
    shared = [group.name for group in run_groups(parse_spec(document))]
    assert shared == names  # no run reads them
    changed = [group.name for group in run_groups(parse_spec(sweep_document(normalize_q_loss=True)))]
    assert changed[0] == names[0] and set(changed[1:]).isdisjoint(names[1:])  # fql reads it, qgf not
    document = sweep_document()
    document["agents"][0]["grid"] = {"fql_alpha": [1.0, 2.0]}
    with pytest.raises(QGFError, match=r"agents\[0\].grid: fql_alpha does not apply to agent qgf"):
        parse_spec(document, source="s.toml")


def test_help_lists_every_key_once_by_section():
    groups = help_sections()
    assert groups[0][0] == "shared by every run" and "batch_size" in groups[0][1]
    headings = [heading.split(":")[0] for heading, _ in groups[1:]]
    assert headings[:3] == ["td", "dqc", "goals"] and {"fql", "qam", "policy-optimiser"} <= set(headings)
    keys = [key for _, entries in groups for key in entries]
    assert len(keys) == len(set(keys)) == len(config_module.field_names())
    assert any("[critic=td]" in heading for heading, _ in groups)


def test_agents_are_discovered_in_table_order_and_list_the_sections_they_read():
    names = ("qgf", "fql", "edp", "dac", "qsm-bc", "qam", "bam", "qam-fql", "qam-edit")
    names += ("rebrac", "fbrac", "fawac", "ifql", "cgql", "cgql-mse", "cgql-linex", "dsrl", "fedit", "rlpd")
    assert qgf.agents.AGENT_NAMES == names
    for name in names:
        cls = agent_class(name)
        assert cls.name == name
        # the optimiser clips the policy networks' gradient: listed exactly by the agents that have some
        assert bool(cls.clipped_networks) == ("policy-optimiser" in agent_sections(name)), name
    with pytest.raises(QGFError, match="unknown agent 'fq' .did you mean 'fql'"):
        agent_class("fq")


def test_listing_agents_and_building_configs_import_no_agent_module():
    code = (
        "import sys; from qgf.config import load_preset, help_sections; from qgf.agents import AGENT_NAMES; "
        "load_preset('cpu', {'agent': 'qam-edit', 'critic': 'td'}); help_sections(); AGENT_NAMES; "
        "print(sorted(m for m in sys.modules if m.startswith('qgf.agents.') or m in ('jax', 'numpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ docs/architecture.md, "Adding an agent"


def example_blocks() -> tuple[str, str]:
    """The module and the preset layer of the worked example, as the docs show them."""
    text = DOCS.read_text().split("## Adding an agent", 1)[1]
    module = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    preset = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    assert module.startswith("# src/qgf/agents/demo_bc.py")
    return module, preset


@pytest.fixture
def demo_agent(tmp_path, monkeypatch):
    """The docs' agent on the package's search path and its preset layer among the presets."""
    module, preset = example_blocks()
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "demo_bc.py").write_text(module)
    presets = tmp_path / "presets"
    shutil.copytree(str(config_module._preset_dir()), presets)
    (presets / "agents" / "demo-bc.json").write_text(preset)
    monkeypatch.setattr(qgf.agents, "__path__", [*qgf.agents.__path__, str(folder)])
    monkeypatch.setattr(config_module, "_preset_dir", lambda: presets)
    yield
    sys.modules.pop("qgf.agents.demo_bc", None)


def test_adding_an_agent_as_the_docs_show(demo_agent, tmp_path, monkeypatch, capsys):
    names = sorted(group.name for group in run_groups(parse_spec(sweep_document())))
    before = {name: TrainConfig(agent=name) for name in ("qgf", "fql")}
    assert qgf.agents.AGENT_NAMES[-1] == "demo-bc"
    assert load_preset("tiny", {"agent": "demo-bc"}).demo_bc_weight == 2.0  # its preset layer
    assert load_preset("cpu", {"agent": "demo-bc"}).demo_bc_weight == 3.0
    assert any(heading.startswith("demo-bc:") for heading, _ in help_sections())
    # nothing else changed: the other agents' configs and every existing sweep run name
    assert all(TrainConfig(agent=name) == config for name, config in before.items())
    assert sorted(group.name for group in run_groups(parse_spec(sweep_document()))) == names
    assert TrainConfig(demo_bc_weight=5.0) == TrainConfig()

    monkeypatch.setattr(training_fit, "load_training_data", lambda config, env, data_dir: make_dataset())
    settings = [f"{key}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for key, v in SMALL.items()]
    out = tmp_path / "run"
    command = ["train", "--env", TASK, "--preset", "tiny", "--agent", "demo-bc", *settings]
    command += ["demo_bc_weight=4"]
    assert cli.main([*command, "log_every=2", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    assert "at step 2 (new run)" in capsys.readouterr().out
    run = ckpt.load_run(out)
    assert (run.step, type(run.agent).__name__, run.config.demo_bc_weight) == (2, "DemoBCAgent", 4.0)
    stored = json.loads((out / "config.json").read_text())
    assert (stored["demo_bc_weight"], stored["actor_grad_clip"]) == (4.0, 1.0) and "fql_alpha" not in stored
    assert run.config == small_config(agent="demo-bc", demo_bc_weight=4.0, steps=2, log_every=2)


def test_key_value_parsing_errors_of_config_overrides_and_addon_settings():
    from qgf.addons.base import AddonConfig

    with pytest.raises(QGFError, match=r"^override 'fql_alpha' is not of the form key=value$"):
        parse_overrides(["fql_alpha"])
    with pytest.raises(QGFError, match="bad value 'x' for batch_size: expected int"):
        parse_overrides(["batch_size=x"])
    with pytest.raises(QGFError, match="did you mean 'batch_size'"):
        parse_overrides(["batch_sise=3"])
    assert parse_overrides(["steps=5e3", "layer_norm=off"]) == {"steps": 5000, "layer_norm": False}
    with pytest.raises(QGFError, match=r"^add-on setting '=3' is not of the form key=value$"):
        AddonConfig.parse(["=3"])
    assert AddonConfig.parse(["steps=1_000"]) == {"steps": 1000}
