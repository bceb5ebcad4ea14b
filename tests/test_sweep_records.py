"""A sweep's records (`qgf.experiments.records`): what is kept, how it is copied, and which
unfinished jobs a sweep restored from records need not run. Synthetic jobs and trees: no Ray (the
tiny Ray sweep in test_experiments.py restores a real sweep from its records)."""

from __future__ import annotations

from pathlib import Path

from qgf.checkpoint import CHECKPOINT_DIR
from qgf.experiments.jobs import Job
from qgf.experiments.records import copy_records, is_record, superseded


def job(job_id, *deps, out="/nonexistent/qgf-test-job"):
    return Job(id=job_id, kind="x", stage="x", out=str(out), params={}, deps=deps, cpus=1, gpus=0, cost=1.0)


def test_records_leave_out_checkpoints_data_and_logs():
    assert CHECKPOINT_DIR == "checkpoints"  # records.py names it without importing qgf.checkpoint
    kept = [
        "protocol.json",
        "runs/a/t/seed0/config.json",
        "runs/a/t/seed0/curve.csv",
        "evals/f/a/t/s/results.json",
    ]
    left = [
        "runs/a/t/seed0/checkpoints/step_0000100.msgpack",
        "runs/a/t/seed0/addons/cfgrl/checkpoints/step_0000010.msgpack",
        "data/abc/cube.npz",
        "data/abc/meta.json",
        "logs/train_a.log",
        ".sweep.lock",
    ]
    assert [is_record(Path(p)) for p in kept] == [True] * len(kept)
    assert [is_record(Path(p)) for p in left] == [False] * len(left)


def test_copy_writes_what_differs_and_restoring_keeps_local_files(tmp_path):
    src, dst = tmp_path / "sweep", tmp_path / "records"
    for name, text in (("protocol.json", "{}"), ("runs/r/t/seed0/curve.json", "a"), ("logs/x.log", "l")):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    assert sorted(map(str, copy_records(src, dst))) == ["protocol.json", "runs/r/t/seed0/curve.json"]
    assert not (dst / "logs").exists()
    assert copy_records(src, dst) == []  # equal files are not rewritten
    (src / "runs/r/t/seed0/curve.json").write_text("b")
    assert copy_records(src, dst, under=src / "runs/r") == [Path("runs/r/t/seed0/curve.json")]
    assert (dst / "runs/r/t/seed0/curve.json").read_text() == "b"
    # restoring: files the sweep directory has are its own (newer), missing ones come back
    (dst / "runs/r/t/seed0/curve.json").write_text("old")
    (src / "protocol.json").unlink()
    assert copy_records(dst, src, overwrite=False) == [Path("protocol.json")]
    assert (src / "runs/r/t/seed0/curve.json").read_text() == "b"
    assert copy_records(src, dst, under="missing/dir") == []


def test_a_job_is_superseded_only_when_everything_that_uses_it_is_done(tmp_path):
    jobs = [
        job("generate"),
        job("train/a", "generate"),
        job("eval/a1", "train/a"),
        job("eval/a2", "train/a"),
        job("train/b", "generate"),
        job("eval/b", "train/b"),
        job("online/c"),  # depends on nothing and nothing depends on it
    ]
    assert superseded(jobs, set()) == set()
    # train/a's evaluations are restored: it and nothing else is superseded (generate feeds train/b)
    assert superseded(jobs, {"eval/a1", "eval/a2"}) == {"train/a"}
    assert superseded(jobs, {"eval/a1"}) == set()
    # with every evaluation done, the trainings and the data are not needed; a leaf never is
    assert superseded(jobs, {"eval/a1", "eval/a2", "eval/b"}) == {"train/a", "train/b", "generate"}
    # a dependent planned later (a final stage) makes its training needed again
    later = [*jobs, job("eval/final-a", "train/a")]
    assert superseded(later, {"eval/a1", "eval/a2", "eval/b"}) == {"train/b"}
    # finished jobs are not reported as superseded
    assert superseded(jobs, {"train/a", "eval/a1", "eval/a2", "eval/b"}) == {"train/b", "generate"}
    # a training with checkpoints resumes (its curve may be missing), even when its evaluations are done
    run = tmp_path / "runs" / "a" / "t"
    (run / "seed0" / "checkpoints").mkdir(parents=True)
    (run / "seed0" / "checkpoints" / "step_0000010.msgpack").write_bytes(b"")
    jobs[1] = job("train/a", "generate", out=run)
    assert superseded(jobs, {"eval/a1", "eval/a2", "eval/b"}) == {"train/b"}
