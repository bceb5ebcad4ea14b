"""Every pipeline entry point for a few steps: qgf data generate -> qgf train -> qgf evaluate."""

from __future__ import annotations

import json

import pytest

from qgf.cli import main
from qgf.evaluation.results import read_results


def test_generate_train_evaluate(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    generate = ["data", "generate", "--env", "cube-single-play-v0", "--episodes", "2", "--val-episodes", "1"]
    generate += ["--episode-length", "50", "--workers", "1", "--out", str(data), "--no-progress"]
    assert main(generate) == 0

    train = [
        "train",
        "--env",
        "cube-single-play-singletask-task1-v0",
        "--data",
        str(data),
        "--preset",
        "tiny",
    ]
    train += ["--steps", "20", "log_every=10", "ckpt_every=20", "--out", str(run), "--no-progress"]
    assert main(train) == 0
    capsys.readouterr()

    evaluate = ["evaluate", str(run), "--sampler", "qgf", "--sampler", "none", "--weights", "0,0.05"]
    evaluate += ["--episodes", "1", "--workers", "1", "--envs", "2", "--no-progress"]
    assert main(evaluate) == 0
    printed = capsys.readouterr().out
    assert "| sampler | N | weight | success (95% CI) |" in printed
    assert printed.count("| qgf | 1 |") == 2 and printed.count("| none | 1 | 0 |") == 1

    results = read_results(run / "eval")
    assert results.env == "cube-single-singletask-task1-v0" and results.task == 1
    assert (results.ogbench_version, results.success_timing) == ("1.2.2", "pre")
    assert results.max_episode_steps == 200 and results.action_horizon == 5
    conditions = [(r.sampler, r.weight, r.bfn, r.episodes) for r in results.results]
    assert conditions == [("qgf", 0.0, 1, 1), ("qgf", 0.05, 1, 1), ("none", 0.0, 1, 1)]
    for result in results.results:
        assert 1 <= result.episode_length[0] <= 200
        assert result.length_mean == result.episode_length[0]
        assert result.q_mean is not None  # the critic's value of the executed chunks
    assert results.env_steps == sum(r.episode_length[0] for r in results.results)
    assert json.loads((run / "eval" / "results.json").read_text())["results"][0]["sampler"] == "qgf"
    assert (run / "eval" / "results.csv").read_text().count("\n") == 4
    assert (run / "eval" / "success_vs_weight.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["evaluate", str(run), "--sampler", "qfg"]) == 2
    assert "did you mean qgf" in capsys.readouterr().err


def test_overrides_may_follow_options_and_abbreviations_are_refused(capsys):
    from qgf.cli import build_parser, parse_args

    parser = build_parser()
    argv = ["train", "--out", "R", "steps=3", "--agent", "qam", "critic=td", "--no-progress", "seed=2"]
    args = parse_args(parser, argv)
    assert args.agent == "qam" and args.overrides == ["steps=3", "critic=td", "seed=2"]
    for wrong in (["train", "--out", "R", "--agen", "qam"], ["train", "--out", "R", "--bogus=1"]):
        with pytest.raises(SystemExit):
            parse_args(parser, wrong)
        assert "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a command without overrides takes no key=value
        parse_args(parser, ["report", "DIR", "a=1"])


def test_every_help_page_renders_without_literal_format_escapes():
    """argparse %-formats `help=` strings but not `description=`; a `%%` there prints verbatim."""
    import argparse

    from qgf.cli import build_parser

    def pages(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from pages(sub)

    rendered = {parser.prog: parser.format_help() for parser in pages(build_parser())}
    assert len(rendered) > 10 and "qgf report" in rendered
    bad = [prog for prog, text in rendered.items() if "%%" in text or "%(" in text]
    assert not bad, f"help pages with unrendered % escapes: {bad}"
    from qgf.experiments.spec import shipped_spec_names

    assert all(name in rendered["qgf sweep"] for name in shipped_spec_names())
