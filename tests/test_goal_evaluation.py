"""Goal-conditioned evaluation on OGBench's evaluation goals (issue 11, part 3): a tiny
goal-conditioned run (2 training steps on an in-memory dataset of puzzle-3x3's sizes) evaluated on
goals 1 and 2 of puzzle-3x3-v0 in this process, with short episodes.

The env is OGBench's own (`qgf.evaluation.workers.make_goal_evaluation_env`), wrapped so that in episode 0
the puzzle's buttons are set to the goal's states just before step `REACH_STEP`: OGBench's own
`step` then computes `info['success']` and `terminated`, so some episodes succeed (an untrained
policy never would) and every recorded outcome can be checked against a direct rollout of the
recorded actions in the same env.

One evaluation (through the CLI) serves most tests; the resume test runs two more."""

import contextlib
import dataclasses
import io
import json
import shutil
import warnings

import numpy as np
import pytest

from helpers import SimulatedKill, make_dataset, small_config
from qgf import checkpoint as ckpt
from qgf import cli
from qgf.errors import QGFError
from qgf.evaluation import goals as goals_module
from qgf.evaluation import resume as resume_module
from qgf.evaluation import run as run_module
from qgf.evaluation.conditions import sweep_conditions
from qgf.evaluation.goals import read_goal_evaluation
from qgf.evaluation.results import EvaluationResults, read_results
from qgf.evaluation.rollout import chunk_noise_seed, episode_reset_seed
from qgf.evaluation.run import evaluate_goals, evaluate_run
from qgf.evaluation.stats import wilson_interval
from qgf.evaluation.workers import make_goal_evaluation_env
from qgf.policy import AgentPolicy

pytestmark = [
    pytest.mark.filterwarnings("ignore:log_every=2"),  # a test setting
    pytest.mark.filterwarnings("ignore:.*precision lowered by casting"),  # OGBench's float64 action bounds
]

DATASET = "puzzle-3x3-play-v0"
ENV = "puzzle-3x3-v0"
OBS_DIM, ACTION_DIM = 55, 5  # puzzle-3x3's observation and action sizes
GOALS = [1, 2]
EPISODES, SEED, LIMIT = 2, 3, 6
HORIZON = 2  # helpers.SMALL's chunk length
REACH_STEP = 3  # inside the second chunk: the episode ends mid-chunk
REACHING_SEEDS = {episode_reset_seed(SEED, 0)}  # episode 0 reaches its goal, episode 1 does not
with warnings.catch_warnings():  # log_every=2
    warnings.simplefilter("ignore")
    CONFIG = small_config(
        goal_conditioned=True,
        dqc_horizon=4,
        distill_expectile=0.7,
        flow_steps=2,
        batch_size=16,
        steps=2,
        log_every=2,
        ckpt_every=2,
    )
# BC and QGF at one weight; conditions in this order (sampler-major)
SAMPLER_ARGS = ["--sampler", "none", "--sampler", "qgf", "--weights", "0.5"]
CONDITIONS = sweep_conditions(["none", "qgf"], [0.5], [1], steps=CONFIG.flow_steps)

_make_real_goal_env = make_goal_evaluation_env
BUILT_GOALS: list[int] = []  # the goal of every env built, in order
POLICY_CALLS: list[tuple] = []  # (goal, observations, conditions, noise seeds, actions) per call


class GoalReachingEnv:
    """OGBench's goal env of one evaluation goal; in episodes started from a seed in
    REACHING_SEEDS, the buttons are set to the goal's states before step REACH_STEP."""

    def __init__(self, name, goal):
        self.env = _make_real_goal_env(name, goal)
        self.goal = goal
        self.spec, self.unwrapped = self.env.spec, self.env.unwrapped
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space
        BUILT_GOALS.append(goal)

    def reset(self, seed=None):
        self.steps, self.reaches = 0, seed in REACHING_SEEDS
        return self.env.reset(seed=seed)

    def step(self, action):
        self.steps += 1
        if self.reaches and self.steps == REACH_STEP:
            puzzle = self.env.unwrapped
            puzzle._cur_button_states = puzzle._target_button_states.copy()
        return self.env.step(action)


@contextlib.contextmanager
def recording_evaluation():
    """Evaluations in this block run in GoalReachingEnv and record every policy call."""
    call = AgentPolicy.__call__

    def recording(self, observations, condition_indices, noise_seeds):
        output = call(self, observations, condition_indices, noise_seeds)
        goal = BUILT_GOALS[-1]
        POLICY_CALLS.append(
            (goal, observations.copy(), condition_indices.copy(), noise_seeds.copy(), output.actions.copy())
        )
        return output

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "make_goal_evaluation_env", GoalReachingEnv)
        patch.setattr(AgentPolicy, "__call__", recording)
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from qgf.training import train

    path = tmp_path_factory.mktemp("gc") / "run"
    dataset = make_dataset(num_trajectories=4, length=12, obs_dim=OBS_DIM, action_dim=ACTION_DIM)
    train(CONFIG, path, env=DATASET, dataset=dataset, progress=False)
    return path


@pytest.fixture(scope="module")
def evaluated(run_dir, tmp_path_factory):
    """`qgf evaluate RUN --goal 1,2 ...` in this process: (out dir, stdout, policy calls)."""
    out = tmp_path_factory.mktemp("eval") / "out"
    argv = ["evaluate", str(run_dir), "--goal", "1,2", "--episodes", str(EPISODES), "--seed", str(SEED)]
    argv += [*SAMPLER_ARGS, "--workers", "0", "--envs", "1", "--max-episode-steps", str(LIMIT)]
    argv += ["--out", str(out), "--no-progress"]
    stdout = io.StringIO()
    POLICY_CALLS.clear()
    with recording_evaluation(), contextlib.redirect_stdout(stdout):
        assert cli.main(argv) == 0
    return out, stdout.getvalue(), list(POLICY_CALLS)


def test_one_results_file_per_goal_records_the_goal(evaluated, run_dir):
    out, _, _ = evaluated
    for goal in GOALS:
        results = read_results(out / f"goal{goal}")
        assert (results.env, results.task, results.goal, results.goal_conditioned) == (ENV, goal, goal, True)
        assert results.extra["goal_conditioned"] is True and results.extra["goal"] == goal
        assert results.success_timing == "post"  # OGBench's goal-conditioned envs
        assert (results.max_episode_steps, results.action_horizon) == (LIMIT, HORIZON)
        assert results.episodes_per_condition == EPISODES and results.run == str(run_dir)
        assert [(r.label, r.weight) for r in results.results] == [("none", 0.0), ("qgf", 0.5)]
        for name in ("results.csv", "results.md", "success_vs_weight.png"):
            assert (out / f"goal{goal}" / name).stat().st_size > 0
        assert f"# Evaluation: {ENV}, goal {goal}" in (out / f"goal{goal}" / "results.md").read_text()
    assert not (out / "goal3").exists()


@pytest.fixture(scope="module")
def goal_envs():
    """One GoalReachingEnv per goal, reused (an env is a function of its reset seed)."""
    return {goal: GoalReachingEnv(DATASET, goal) for goal in GOALS}


def test_the_policy_sees_observation_and_goal(evaluated, goal_envs):
    """Every row the policy saw has 2 x 55 features: the env's observation, then the goal the
    env's reset returned for that episode (the same for every condition: the goal observation is a
    function of the reset seed); the two goals differ."""
    _, _, calls = evaluated
    assert {goal for goal, *_ in calls} == set(GOALS)
    goals_seen = {}
    for goal, observations, _, _, _ in calls:
        assert observations.shape[1] == 2 * OBS_DIM and observations.dtype == np.float32
        for row in observations:
            goals_seen.setdefault(goal, set()).add(row[OBS_DIM:].tobytes())
    for goal in GOALS:
        expected = set()
        for episode in range(EPISODES):
            _, info = goal_envs[goal].reset(seed=episode_reset_seed(SEED, episode))
            expected.add(np.asarray(info["goal"], np.float32).tobytes())
        assert goals_seen[goal] == expected and len(expected) == EPISODES
    assert not goals_seen[1] & goals_seen[2]


def replay(env, chunks, reset_seed):
    """A direct rollout of the recorded chunks (clipped, executed open-loop, the episode ending at
    termination or LIMIT steps): (observation before each chunk, success, length, return)."""
    np.random.seed(reset_seed)
    observation, _ = env.reset(seed=reset_seed)
    before, steps, total, done = [], 0, 0.0, False
    for chunk in chunks:
        before.append(np.asarray(observation, np.float32))  # what the rollout hands the policy
        for action in np.clip(chunk.reshape(HORIZON, ACTION_DIM), -1, 1):
            observation, reward, terminated, truncated, info = env.step(action)
            steps, total = steps + 1, total + reward
            if terminated or truncated or steps >= LIMIT:
                done = True
                break
        if done:
            break
    assert done and len(before) == len(chunks)
    return before, bool(info["success"]), steps, total


def test_success_is_ogbench_info_success_of_a_direct_rollout(evaluated, goal_envs):
    """Replay each episode's recorded chunks in OGBench's env: the observations the policy was
    given, success (OGBench's info['success'] at the last step), length and return all match the
    results; episode 0 reaches its goal at step REACH_STEP (success counted at that step: 'post'
    timing), episode 1 runs to the limit."""
    out, _, calls = evaluated
    noise = {chunk_noise_seed(SEED, e, c): (e, c) for e in range(EPISODES) for c in range(LIMIT)}
    chunks, seen = {}, {}
    for goal, observations, conditions, seeds, actions in calls:
        for row, (condition, seed) in enumerate(zip(conditions, seeds, strict=True)):
            episode, chunk = noise[int(seed)]
            chunks.setdefault((goal, int(condition), episode), {})[chunk] = actions[row]
            seen[(goal, int(condition), episode, chunk)] = observations[row]
    for goal in GOALS:
        results = read_results(out / f"goal{goal}")
        for condition, summary in enumerate(results.results):
            for episode in range(EPISODES):
                recorded = chunks[(goal, condition, episode)]
                assert sorted(recorded) == list(range(len(recorded)))
                before, success, length, total = replay(
                    goal_envs[goal],
                    [recorded[c] for c in sorted(recorded)],
                    episode_reset_seed(SEED, episode),
                )
                for chunk, observation in enumerate(before):
                    np.testing.assert_array_equal(seen[(goal, condition, episode, chunk)], observation)
                assert summary.episode_success[episode] == success
                assert summary.episode_length[episode] == length
                assert summary.episode_return[episode] == pytest.approx(total)
                assert (success, length) == ((True, REACH_STEP) if episode == 0 else (False, LIMIT))


def test_summary_overall_is_the_mean_over_goals(evaluated):
    out, stdout, _ = evaluated
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["env"], summary["goals"], summary["episodes_per_goal"]) == (ENV, GOALS, EPISODES)
    per_goal = {goal: read_results(out / f"goal{goal}") for goal in GOALS}
    for index, row in enumerate(summary["conditions"]):
        rates = [per_goal[goal].results[index].success_rate for goal in GOALS]
        successes = sum(per_goal[goal].results[index].successes for goal in GOALS)
        overall = row["overall"]
        assert overall["success_rate"] == pytest.approx(np.mean(rates))
        assert (overall["successes"], overall["episodes"]) == (successes, EPISODES * len(GOALS))
        assert (overall["ci_low"], overall["ci_high"]) == pytest.approx(
            wilson_interval(successes, EPISODES * len(GOALS))
        )
        assert [row["goals"][str(goal)]["success_rate"] for goal in GOALS] == rates
    # the file-based summary agrees, and the pooled episodes stay paired (goal-major)
    pooled = read_goal_evaluation(out).overall()
    assert pooled.task is None and pooled.extra["goals"] == GOALS and pooled.episodes_per_condition == 4
    assert pooled.results[0].episode_success == [True, False, True, False]
    assert [r.success_rate for r in pooled.results] == [
        c["overall"]["success_rate"] for c in summary["conditions"]
    ]
    # printed and saved: one row per condition with each goal's rate and the overall
    table = "| sampler | N | weight | goal 1 | goal 2 | overall (95% CI) | episodes |"
    assert table in stdout and table in (out / "summary.md").read_text()
    assert "| qgf | 1 | 0.5 | 0.50 [" in stdout
    assert (out / "success_vs_weight.png").stat().st_size > 0


def test_a_killed_evaluation_resumes_with_its_finished_goals_and_conditions(
    evaluated, run_dir, tmp_path, monkeypatch
):
    """Killed after its third saved (goal, condition): goal 1 and goal 2's BC. The resumed
    evaluation runs only goal 2's QGF, and every episode equals the uninterrupted evaluation's."""
    out, _, _ = evaluated
    resume = tmp_path / "partial"
    options = dict(episodes=EPISODES, goals=GOALS, seed=SEED, workers=0, num_envs=1, max_episode_steps=LIMIT)
    save = resume_module.save_partial
    saved = []

    def save_then_kill(*args, **kwargs):
        save(*args, **kwargs)
        saved.append(args[1])
        if len(saved) == 3:
            raise SimulatedKill

    with recording_evaluation():
        monkeypatch.setattr(resume_module, "save_partial", save_then_kill)
        with pytest.raises(SimulatedKill):
            evaluate_goals(str(run_dir), conditions=CONDITIONS, resume_dir=resume, **options)
        monkeypatch.setattr(resume_module, "save_partial", save)
        # goal 1's BC (weight 0) and QGF (weight 0.5), then goal 2's BC
        assert [(identity["goal"], identity["weight"]) for identity in saved] == [
            (1, 0.0),
            (1, 0.5),
            (2, 0.0),
        ]
        assert len(list(resume.glob("condition-*.json"))) == 3

        rollouts = []
        rollout = resume_module.rollout

        def recording_rollout(env, policy_fn, conditions, *args, **kwargs):
            rollouts.append((env.args[1], list(conditions)))
            return rollout(env, policy_fn, conditions, *args, **kwargs)

        monkeypatch.setattr(resume_module, "rollout", recording_rollout)
        resumed = evaluate_goals(str(run_dir), conditions=CONDITIONS, resume_dir=resume, **options)
    assert rollouts == [(2, [CONDITIONS[1]])]  # goal 1 and goal 2's BC came from the saved files
    assert resumed.goals == GOALS
    for goal in GOALS:
        uninterrupted = read_results(out / f"goal{goal}")
        for again, first in zip(resumed.per_goal[goal].results, uninterrupted.results, strict=True):
            assert (again.label, again.weight) == (first.label, first.weight)
            assert again.episode_success == first.episode_success
            assert again.episode_length == first.episode_length
            assert again.episode_return == pytest.approx(first.episode_return)
            assert again.q_mean == pytest.approx(first.q_mean, rel=1e-4)
    # a fully resumed goal built no env: its file still validates
    assert resumed.per_goal[1].num_envs == 0
    assert read_results_roundtrip(resumed.per_goal[1]).task == 1
    # evaluate_run evaluates one goal of a goal-conditioned run, with the same identities
    del options["goals"]
    single = evaluate_run(str(run_dir), task=1, conditions=CONDITIONS, resume_dir=resume, **options)
    assert len(rollouts) == 1 and single.results == resumed.per_goal[1].results


def read_results_roundtrip(results):
    return EvaluationResults.from_dict(json.loads(json.dumps(results.to_dict())))


# ------------------------------------------------------------------------------------------ errors


def one_line_error(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_goal_ids_outside_one_to_five_are_one_line_errors(run_dir, capsys):
    base = ["evaluate", str(run_dir), "--workers", "0", "--no-progress"]
    assert "1..5" in one_line_error(capsys, [*base, "--task", "6"])
    assert "1..5" in one_line_error(capsys, [*base, "--goal", "0"])
    assert "1..5" in one_line_error(capsys, [*base, "--goal", "1,x"])
    assert "give one of them" in one_line_error(capsys, [*base, "--goal", "1", "--task", "2"])
    with pytest.raises(QGFError, match=r"goals 1\.\.5"):
        evaluate_run(run_dir, task=7)
    with pytest.raises(QGFError, match="evaluate_goals"):
        evaluate_run(run_dir)  # which goal?
    with pytest.raises(QGFError, match=r"goals 1\.\.5"):
        evaluate_goals(run_dir, goals=[2, 9])


def test_a_single_task_run_has_no_goals(run_dir, capsys, monkeypatch):
    run = ckpt.load_run(run_dir)
    single = dataclasses.replace(
        run,
        config=run.config.replace(goal_conditioned=False, critic="iql"),
        meta={**run.meta, "goal_conditioned": False, "env": "puzzle-3x3-play-singletask-task1-v0"},
    )
    with pytest.raises(QGFError, match="trained single-task on puzzle-3x3-play-singletask-task1-v0"):
        evaluate_goals(single)
    monkeypatch.setattr(ckpt, "load_run", lambda path, step=None: single)
    err = one_line_error(capsys, ["evaluate", str(run_dir), "--goal", "1", "--no-progress"])
    assert "no evaluation goals" in err and "--task K" in err


def test_observation_size_mismatch_names_the_sizes_and_the_fix(run_dir, tmp_path, capsys):
    """A goal-conditioned run whose networks do not take the env's [observation, goal]: here a
    puzzle-3x3 run whose meta.json names cube-single (28 features, so 56 with the goal)."""
    other = tmp_path / "run"
    shutil.copytree(run_dir, other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "env": "cube-single-play-v0"}))
    expected = r"takes 110 = 55 \(observation\) \+ 55 \(goal\) inputs, but cube-single-v0 gives 56 = 28 \+ 28"
    with pytest.raises(QGFError, match=expected):
        evaluate_goals(other, goals=[1], episodes=1, workers=0)
    err = one_line_error(capsys, ["evaluate", str(other), "--workers", "0", "--no-progress"])
    assert "gives 56 = 28 + 28" in err and "retrain it on cube-single-v0's play data" in err
    # the same check at the first policy call, for envs whose sizes qgf does not know in advance
    run = ckpt.load_run(other)
    policy = goals_module.GoalPolicy(
        AgentPolicy(run.agent, CONDITIONS),
        [0, 1],
        lambda dim: goals_module.goal_size_error(run, "x-v0", dim),
    )
    with pytest.raises(QGFError, match="x-v0 gives 56 = 28 \\+ 28"):
        policy(np.zeros((1, 56), np.float32), np.array([0]), np.array([0], np.uint32))


def test_single_task_results_files_still_read(evaluated):
    """A results file without any goal fields (every single-task file) reads as before."""
    out, _, _ = evaluated
    document = read_results(out / "goal1").to_dict()
    document.update(env="puzzle-3x3-singletask-task1-v0", task=1, extra={"run_step": 2})
    results = EvaluationResults.from_dict(document)
    assert (results.goal_conditioned, results.goal, results.title) == (False, None, results.env)
