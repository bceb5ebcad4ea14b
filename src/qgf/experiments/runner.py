"""Running a sweep's job graph on Ray: a local instance by default (`ray.init(num_cpus=...)`,
nothing to start by hand, killed with its driver) or a cluster (`address`; both in
`qgf.experiments.cluster`). Each job declares its CPUs/GPUs; a job runs in a Ray worker with its
output sent to its own log file; a failed job is reported with that log and its dependants are
skipped while every other job finishes. A file lock refuses a second sweep on the same directory,
and jobs write nothing once the sweep holding it is gone. Finished jobs (outputs complete on disk)
are never run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from qgf.errors import QGFError
from qgf.experiments.cluster import DriverGuard, connect, embedded_instance, node_identity, parse_address
from qgf.experiments.jobs import PROTOCOL_FILE, Job, job_done, plan
from qgf.experiments.records import copy_records, superseded
from qgf.experiments.spec import SweepSpec
from qgf.fileio import atomic_write_text

LOCK_FILE = ".sweep.lock"
STATUS_FILE = "sweep-status.json"
PROGRESS_REFRESH_S = 5.0


# ------------------------------------------------------------------ one job (runs in a Ray worker)


def execute(job: Job, guard: DriverGuard | None = None) -> None:
    """Run one job in this process (what a Ray task does); with a `guard`, write nothing once the
    sweep that started it has gone."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = Path(job.out)
    params = job.params
    if job.kind == "generate":
        from qgf.data import generate

        generate(
            params["env"],
            out,
            episodes=params.get("episodes"),
            val_episodes=params.get("val_episodes"),
            episode_length=params.get("episode_length", 1001),
            seed=params.get("seed", 0),
            workers=params.get("workers", 1),
            progress=False,
        )
    elif job.kind == "train":
        from qgf.config import TrainConfig
        from qgf.training import train_seeds

        config = TrainConfig.from_dict(params["config"])
        seeds = params["seeds"]
        train_seeds(
            config,
            seeds,
            [out / f"seed{seed}" for seed in seeds],
            env=params["task"],
            data_dir=params["data_dir"],
            progress=False,
            curve=_curve_evaluator(params.get("curve")),
        )
    elif job.kind == "addon":
        from qgf.addons.base import train_addon

        train_addon(
            params["run"],
            params["name"],
            overrides={**params["settings"], "steps": params["steps"]},
            data_dir=params["data_dir"],
            progress=False,
        )
    elif job.kind == "online":
        from qgf.experiments.online_sweep import run_online_job

        run_online_job(out, params)
    elif job.kind == "evaluate":
        from qgf.checkpoint import load_run
        from qgf.evaluation.conditions import Condition
        from qgf.evaluation.results import write_json
        from qgf.evaluation.run import evaluate_run
        from qgf.guidance import SamplerSpec

        conditions = [Condition(SamplerSpec(**c["spec"]), float(c["weight"])) for c in params["conditions"]]
        results = evaluate_run(
            load_run(params["run"], step=params.get("run_step")),  # None (older jobs): the latest
            conditions=conditions,
            episodes=params["episodes"],
            seed=params["seed"],
            workers=params["workers"],
            num_envs=params["num_envs"],
            groups=params.get("groups", 1),
            resume_dir=out / "partial",
            max_episode_steps=params.get("max_episode_steps"),
            keep_envs=True,  # this Ray worker reuses the task's envs for its next evaluation job
        )
        results = dataclasses.replace(results, extra={**results.extra, "sweep": _sweep_extra(params)})
        if guard is not None:
            guard.check()
        write_json(results, out / "results.json")  # the completion marker: written last, atomically
        shutil.rmtree(out / "partial", ignore_errors=True)
    else:
        raise QGFError(f"unknown job kind {job.kind!r}")


def _curve_evaluator(curve: dict[str, Any] | None):
    """The train job's learning curve (None without evaluation.eval_every); envs in the job's
    own process, as its evaluation jobs do with one CPU."""
    if curve is None:
        return None
    from qgf.evaluation.conditions import Condition
    from qgf.evaluation.curve import CurveEvaluator
    from qgf.guidance import SamplerSpec

    conditions = [Condition(SamplerSpec(**c["spec"]), float(c["weight"])) for c in curve["conditions"]]
    return CurveEvaluator(
        every=curve["every"],
        episodes=curve["episodes"],
        seed=curve["seed"],
        conditions=conditions,
        max_episode_steps=curve["max_episode_steps"],
    )


def _sweep_extra(params: dict[str, Any]) -> dict[str, Any]:
    keys = ("group", "agent", "point", "task", "run_seed", "stage", "methods")
    return {key: params[key] for key in keys if key in params}


def run_logged(job: Job, log_path: str, guard: DriverGuard | None = None) -> dict[str, Any]:
    """`execute` with stdout and stderr (file descriptors, so subprocesses too) sent to the log.
    Returns {'ok', 'error', 'seconds', 'node', ...}; never raises, so one failure cannot stop the
    sweep. With a `guard`, the job does not start, and its process ends, once the sweep has gone."""
    start = time.perf_counter()
    started_at = time.time()
    node = node_identity()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a") as log:
        where = (
            f"pid {os.getpid()} on {node['host']}, node {node.get('node_ip', '?')} {node.get('node_id', '')}"
        )
        log.write(f"--- {job.id} started {time.strftime('%Y-%m-%d %H:%M:%S')} ({where.strip()})\n")
        log.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            if guard is not None:
                guard.check()  # also fails at once where the sweep directory is not shared
            with guard.watch() if guard is not None else contextlib.nullcontext():
                execute(job, guard)
            error = None
        except BaseException as exc:  # noqa: BLE001 - reported to the driver with the log path
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    seconds = time.perf_counter() - start
    return {
        "ok": error is None,
        "error": error,
        "seconds": seconds,
        "started": started_at,
        "ended": time.time(),
        "node": node,
    }


# ------------------------------------------------------------------ the driver


class SweepLock:
    """An exclusive `flock` on SWEEP_DIR/.sweep.lock, released when the process ends (even killed).
    The file names the holder and a fresh token, which jobs check (`guard`) before they write."""

    def __init__(self, sweep_dir: Path):
        import fcntl

        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.path = sweep_dir / LOCK_FILE
        self.handle = open(self.path, "a+")  # noqa: SIM115 - held for the sweep's lifetime
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise QGFError(
                f"another sweep ({holder}) is running on {sweep_dir}; "
                "wait for it to finish or use another --out"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.guard = DriverGuard(str(self.path), uuid.uuid4().hex)
        self.handle.write(f"pid {os.getpid()} on {os.uname().nodename} token {self.guard.token}")
        self.handle.flush()

    def release(self) -> None:
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


@dataclasses.dataclass
class SweepOutcome:
    sweep_dir: Path
    ran: list[str]
    skipped: list[str]  # finished before this call
    failed: dict[str, tuple[str, str]]  # job id -> (error, log path)
    blocked: list[str]  # not run because a dependency failed
    waiting: str  # a note on jobs not yet plannable
    wall_clock_s: float
    ray_overhead_s: float  # time during which no job was executing (scheduling, worker start, driver)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


def format_plan(jobs: list[Job], note: dict[str, Any]) -> str:
    """The job list with its estimated cost, for --plan."""
    gpu = any(job.gpu_cost for job in jobs)
    head = f"{'status':<8} {'stage':<6} {'cpus':>4} {'gpus':>4} {'est. cpu-s':>10}"
    lines = [head + (f" {'est. gpu-s':>10}" if gpu else "") + "  job"]
    finished = {job.id for job in jobs if job_done(job)}  # reads each job's outputs once
    not_needed = superseded(jobs, finished)
    todo = [job for job in jobs if job.id not in finished and job.id not in not_needed]
    for job in jobs:
        status = "done" if job.id in finished else "skip" if job.id in not_needed else "todo"
        line = f"{status:<8} {job.stage:<6} {job.cpus:>4g} {job.gpus:>4g} {job.cost:>10.0f}"
        lines.append(line + (f" {job.gpu_cost:>10.0f}" if gpu else "") + f"  {job.id}")
    total = f"about {sum(j.cost for j in todo) / 3600:.2f} CPU-hours"
    if gpu:
        total += f" and {sum(j.gpu_cost for j in todo) / 3600:.2f} GPU-hours"
    why = "; GPU-hours from the QAM paper's Table 6 timings, not measured here" if gpu else ""
    lines.append(f"{len(jobs)} jobs, {len(todo)} to run, {total} (a rough estimate{why})")
    if not_needed:
        lines.append(f"skip: {len(not_needed)} unfinished jobs not needed (every job that uses them is done)")
    if note.get("waiting"):
        lines.append(f"not yet planned: {note['waiting']}")
    if note.get("unplanned_cost"):
        cpu, gpu = note["unplanned_cost"]
        more = f"about {cpu / 3600:.2f} CPU-hours" + (f" and {gpu / 3600:.2f} GPU-hours" if gpu else "")
        lines.append(f"  that final stage: {more} more (each method's first grid point standing for it)")
    return "\n".join(lines)


_KIND_PRIORITY = {"evaluate": 0, "addon": 1, "online": 2, "train": 3, "generate": 4}


def submission_priority(job: Job, agent_order: dict[str, int] | None = None) -> tuple:
    """The order in which ready jobs are started: evaluations and add-ons first (they finish
    what is trained), then training for the final stage before the protocol's tuning seeds; within
    those, the agents in the spec's order (a study whose compute runs out has its first agents
    complete rather than every agent half done), the longest job first for one agent (it bounds
    the sweep's wall-clock)."""
    order = agent_order or {}
    rank = order.get(job.params.get("agent"), len(order))  # agents the spec does not list go last
    return (_KIND_PRIORITY.get(job.kind, 5), job.id.endswith("/tune-seeds"), rank, -job.work, job.id)


def run_sweep(
    spec: SweepSpec,
    sweep_dir: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    records: str | Path | None = None,
) -> SweepOutcome:
    """Run every job of `spec` not yet finished in `sweep_dir` on Ray; returns what happened.
    `records`: a directory the sweep's records are restored from and kept in step with
    (`qgf.experiments.records`)."""
    import ray

    if address:
        parse_address(address)  # a malformed address fails before anything starts
    sweep_dir = Path(sweep_dir)
    lock = SweepLock(sweep_dir)
    try:
        if records is not None:
            copy_records(records, sweep_dir, overwrite=False)
        records = None if records is None else Path(records)
        atomic_write_text(
            sweep_dir / "spec.json", json.dumps(dataclasses.asdict(spec), indent=1, default=str)
        )
        if ray.is_initialized():
            return _drive(spec, sweep_dir, progress, lock.guard, records)
        if address:
            connect(address)
            try:
                return _drive(spec, sweep_dir, progress, lock.guard, records)
            finally:
                ray.shutdown()
        with embedded_instance(num_cpus or spec.resources.get("num_cpus") or os.cpu_count() or 1):
            return _drive(spec, sweep_dir, progress, lock.guard, records)
    finally:
        lock.release()


def _drive(
    spec: SweepSpec, sweep_dir: Path, progress: bool, guard: DriverGuard, records: Path | None = None
) -> SweepOutcome:
    import ray

    from qgf.progress import progress_bar

    cluster_cpus = ray.cluster_resources().get("CPU", 1)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    # One process per job: a Ray worker reused for job after job keeps every job's compiled JAX
    # programs and buffers, and grew past 13 GB in a 300-job study on this 24 GB machine.
    remote = ray.remote(max_calls=1)(run_logged)
    agent_order = {agent.label: i for i, agent in enumerate(spec.agents)}
    start = time.perf_counter()
    wall_start = time.time()
    done: set[str] = set()
    skipped: list[str] = []
    ran: list[str] = []
    failed: dict[str, tuple[str, str]] = {}
    blocked: set[str] = set()
    running: dict[Any, tuple[Job, float]] = {}
    job_seconds: dict[str, dict[str, float]] = {}
    bar = progress_bar(progress, 1, unit="cpu-s", desc="sweep")
    note: dict[str, Any] = {"waiting": ""}
    try:
        while True:
            jobs, note = plan(spec, sweep_dir)
            active = {job.id for job, _ in running.values()}
            for job in jobs:
                if job.id not in done and job.id not in active and job_done(job):
                    done.add(job.id)
                    skipped.append(job.id)
            # The bar covers the work of this invocation: jobs found finished on disk are left out,
            # so that the rate, and the ETA, are not inflated by work done before a resume.
            already = set(skipped) | superseded(jobs, done)  # superseded: restored from records
            bar.total = max(sum(job.work for job in jobs if job.id not in already), 1)
            bar.n = sum(job.work for job in jobs if job.id in done and job.id not in already)
            ready = []
            for job in jobs:
                if job.id in done or job.id in active or job.id in failed or job.id in blocked:
                    continue
                if job.id in already:  # not needed now: every job that uses it is finished
                    continue
                if any(dep in failed or dep in blocked for dep in job.deps):
                    blocked.add(job.id)
                    continue
                if all(dep in done for dep in job.deps):
                    ready.append(job)
            # Only what the cluster can run now is handed to Ray, in priority order, so that jobs
            # planned later (a method's final stage once its tuning is done) do not queue behind
            # every job planned earlier.
            used_cpus = sum(min(job.cpus, cluster_cpus) for job, _ in running.values())
            used_gpus = sum(min(job.gpus, cluster_gpus) for job, _ in running.values())
            for job in sorted(ready, key=lambda job: submission_priority(job, agent_order)):
                options = {"num_cpus": min(job.cpus, cluster_cpus), "num_gpus": min(job.gpus, cluster_gpus)}
                fits = used_cpus + options["num_cpus"] <= cluster_cpus and (
                    used_gpus + options["num_gpus"] <= cluster_gpus
                )
                if running and not fits:
                    continue
                log_path = str(sweep_dir / "logs" / job.log_name)
                ref = remote.options(**options).remote(job, log_path, guard)
                running[ref] = (job, time.perf_counter())
                active.add(job.id)
                used_cpus += options["num_cpus"]
                used_gpus += options["num_gpus"]
            bar.set_postfix_str(_stage_summary(jobs, done, active, failed), refresh=True)
            if not running:
                break
            ready: list = []
            while not ready:  # redraw every few seconds, so elapsed time and ETA move during long jobs
                ready, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_REFRESH_S)
                bar.refresh()
                guard.beat()
            for ref in ready:
                job, submitted = running.pop(ref)
                report = ray.get(ref)
                job_seconds[job.id] = {
                    "inside": report["seconds"],
                    "observed": time.perf_counter() - submitted,
                    "started": report["started"],
                    "ended": report["ended"],
                    "node": report["node"],
                }
                if report["ok"]:
                    done.add(job.id)
                    ran.append(job.id)
                    if records is not None:
                        copy_records(sweep_dir, records, under=job.out)
                        _keep_sweep_files(sweep_dir, records)
                else:
                    log_path = str(sweep_dir / "logs" / job.log_name)
                    failed[job.id] = (report["error"], log_path)
                    bar.write(f"qgf sweep: job {job.id} failed: {report['error']} (log: {log_path})")
    finally:
        bar.close()
        if records is not None:  # the protocol's choices of the last planning
            _keep_sweep_files(sweep_dir, records)
    overhead = _idle_seconds(job_seconds.values(), wall_start, time.time())
    outcome = SweepOutcome(
        sweep_dir=sweep_dir,
        ran=ran,
        skipped=skipped,
        failed=failed,
        blocked=sorted(blocked),
        waiting=note.get("waiting", ""),
        wall_clock_s=time.perf_counter() - start,
        ray_overhead_s=overhead,
    )
    status = {
        **{k: v for k, v in dataclasses.asdict(outcome).items() if k != "sweep_dir"},
        "job_seconds": job_seconds,
    }
    atomic_write_text(sweep_dir / STATUS_FILE, json.dumps(status, indent=1, default=str))
    return outcome


def _keep_sweep_files(sweep_dir: Path, records: Path) -> None:
    """The sweep-level records: the spec that `qgf report` expands, the protocol's choices."""
    for name in ("spec.json", PROTOCOL_FILE):
        copy_records(sweep_dir, records, under=name)


def _stage_summary(jobs: list[Job], done: set[str], active: set[str], failed: dict) -> str:
    parts = []
    for stage in dict.fromkeys(job.stage for job in jobs):
        ids = [job.id for job in jobs if job.stage == stage]
        finished = sum(i in done for i in ids)
        running = sum(i in active for i in ids)
        bad = sum(i in failed for i in ids)
        parts.append(
            f"{stage} {finished}/{len(ids)}"
            + (f" ({running} running)" if running else "")
            + (f" {bad} failed" if bad else "")
        )
    return ", ".join(parts)


def _idle_seconds(intervals, start: float, end: float) -> float:
    """Seconds of [start, end] covered by no job's [started, ended] interval."""
    busy, cursor = 0.0, start
    for interval in sorted(intervals, key=lambda s: s["started"]):
        low, high = max(interval["started"], cursor), min(interval["ended"], end)
        if high > low:
            busy += high - low
            cursor = high
    return max(0.0, (end - start) - busy)
