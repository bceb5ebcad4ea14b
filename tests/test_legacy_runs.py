"""Run and sweep directories written before config sections (tests/fixtures/legacy, written by the
flat 50-field TrainConfig of commit a5bea95) still load, resume to the parameters the old code
reached, and keep their sweep directory names, so their finished jobs are not run again."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import make_dataset, small_config
from qgf import checkpoint as ckpt
from qgf.config import TrainConfig
from qgf.experiments.jobs import job_done, plan
from qgf.experiments.naming import LATER_SECTION_DEFAULTS, LATER_SHARED_DEFAULTS, run_groups
from qgf.experiments.spec import load_spec, parse_spec, shipped_spec_names
from qgf.guidance import SamplerSpec
from qgf.training import resume

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
WIDTHS = {"actor_hidden_dims": (8, 8), "critic_hidden_dims": (8, 8)}
SCHEDULE = {"steps": 6, "log_every": 2, "ckpt_every": 2, "keep_checkpoints": 2}
RUNS = {
    "qgf-iql": {},
    "qgf-dqc-goal": {"goal_conditioned": True, "dqc_horizon": 4, "distill_expectile": 0.7},
}
pytestmark = pytest.mark.filterwarnings("ignore:log_every=2")


def legacy_config_files():
    return sorted(LEGACY.rglob("config.json"))


def test_legacy_config_json_files_hold_every_old_field_and_load():
    files = legacy_config_files()
    assert len(files) == 6  # two runs, four sweep runs
    for path in files:
        stored = json.loads(path.read_text())
        assert len(stored) == 50
        config = ckpt.read_config(path.parent)
        # every key the new config keeps has its stored value (the others belong to sections that
        # do not apply to this run); a shared field added since takes its default
        values = config.to_dict()
        assert all(stored[key] == value for key, value in values.items() if key in stored), path
        # (a key added to a section since takes its default where the section applies)
        later = {**LATER_SHARED_DEFAULTS, **{k: v for k, v in LATER_SECTION_DEFAULTS.items() if k in values}}
        assert {key: values[key] for key in values if key not in stored} == later, path
    for name, settings in RUNS.items():
        assert ckpt.read_config(LEGACY / "runs" / name) == small_config(**settings, **WIDTHS, **SCHEDULE)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_legacy_run_loads_acts_and_resumes_to_the_old_parameters(name, tmp_path):
    run = ckpt.load_run(LEGACY / "runs" / name)
    assert run.step == 6 and run.config.agent == "qgf"
    observations = jnp.zeros((3, run.meta["obs_dim"]))
    actions = run.agent.sample_actions(observations, jax.random.key(0), 0.1, SamplerSpec("qgf", steps=2))
    assert actions.shape == (3, run.agent.chunk_dim) and bool(jnp.all(jnp.isfinite(actions)))

    copy = tmp_path / name
    shutil.copytree(LEGACY / "runs" / name, copy)
    last = ckpt.checkpoint_path(copy, 6)
    last.with_suffix(".json").unlink()
    last.unlink()
    resumed = resume(copy, dataset=make_dataset(), progress=False)
    assert (resumed.resumed_from, resumed.step) == (4, 6)
    # the old code's step-6 parameters (written on the same kind of CPU they are exact; a tolerance
    # for other CPUs' float reassociation)
    for ours, theirs in zip(jax.tree.leaves(resumed.agent), jax.tree.leaves(run.agent), strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-6)
    assert len(json.loads((copy / "config.json").read_text())) < 50  # rewritten with today's keys
    assert ckpt.read_config(copy) == run.config


def test_legacy_sweep_jobs_keep_their_directories_and_are_finished(tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(LEGACY / "sweep", sweep)
    spec = parse_spec(json.loads((sweep / "legacy-spec.json").read_text()), source="legacy")
    jobs, note = plan(spec, sweep)
    assert note["waiting"] == "" and {job.kind for job in jobs} == {"generate", "train", "evaluate"}
    groups = sorted(path.name for path in (sweep / "runs").iterdir())
    assert sorted(group.name for group in run_groups(spec)) == groups
    assert all(job_done(job) for job in jobs), [job.id for job in jobs if not job_done(job)]
    # more steps resume the same directories (whose training is then not finished)
    document = json.loads((sweep / "legacy-spec.json").read_text())
    longer, _ = plan(parse_spec({**document, "overrides": {**document["overrides"], "steps": 6}}), sweep)
    assert [job.out for job in longer] == [job.out for job in jobs]
    assert not any(job_done(job) for job in longer if job.kind == "train")
    for job in jobs:
        if job.kind == "train":
            stored = TrainConfig.from_dict(job.params["config"])
            for seed in job.params["seeds"]:
                assert ckpt.read_config(Path(job.out) / f"seed{seed}") == stored.replace(seed=seed)


def test_shipped_specs_keep_their_run_names():
    """Every shipped spec's run groups are named as before config sections."""
    names = json.loads((LEGACY / "run_names.json").read_text())
    assert set(names) <= set(shipped_spec_names())
    for spec, expected in names.items():
        assert [group.name for group in run_groups(load_spec(spec))] == expected, spec
