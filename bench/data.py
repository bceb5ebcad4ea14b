"""Data-layer benchmarks: generation throughput vs raw env stepping, and slice-streaming memory.

    python bench/data.py [--quick] [--json PATH]

`run(quick)` returns a dict (used by `qgf bench`):

- `env_stepping`: the cube-double env alone (data-collection mode, random actions, one process);
- `generation`: `qgf.data.generate` on cube-double with 1 and 2 workers, steps/s of wall time
  (process start, env build and file assembly included), and per CPU-second (robust to other load);
- `slices`: peak resident memory of a fresh process that streams a 100M-style directory of 10 slices
  (prefetching, device transfer, 20 jitted chunk batches per slice) next to the directory's size on
  disk and in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ENV = "cube-double-play-v0"


def env_stepping(steps: int) -> dict:
    from qgf.data.generation import make_collection_env
    from qgf.envs import manipulation_spec

    env = make_collection_env(manipulation_spec(ENV), steps + 1)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, 5))
    start, cpu_start = time.perf_counter(), time.process_time()
    for action in actions:
        env.step(action)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "steps": steps,
        "steps_per_second": round(steps / wall, 1),
        "steps_per_cpu_second": round(steps / cpu, 1),
    }


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the spawned generation workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def generation_speed(out_dir: str, workers: int, episodes: int, val_episodes: int, length: int) -> dict:
    from qgf.data import generate

    cpu_start = _cpu_seconds()
    result = generate(
        ENV,
        out_dir,
        episodes=episodes,
        val_episodes=val_episodes,
        episode_length=length,
        workers=workers,
        progress=False,
        overwrite=True,
    )
    return {
        "workers": result.workers,
        "episodes": episodes + val_episodes,
        "episode_length": length,
        "steps": result.steps_generated,
        "seconds": round(result.seconds, 2),
        "steps_per_second": round(result.steps_per_second, 1),
        "cpu_seconds": round(_cpu_seconds() - cpu_start, 2),
        "rollout_steps_per_cpu_second": round(result.steps_per_cpu_second, 1),
    }


def build_slice_dir(source_dir: str, directory: str, slices: int, episodes_per_slice: int) -> dict:
    """A 100M-style directory whose slices tile the generated episodes (with small perturbations so
    that no two slices are byte-identical)."""
    from qgf.data.files import save_npz

    source = np.load(os.path.join(source_dir, f"{ENV}.npz"))
    arrays = {key: source[key] for key in source.files}
    ends = np.flatnonzero(arrays["terminals"])
    episode_length = int(ends[0] + 1)
    episodes = len(ends)
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    memory_bytes = 0
    for index in range(slices):
        picks = rng.integers(0, episodes, size=episodes_per_slice)
        rows = (picks[:, None] * episode_length + np.arange(episode_length)).ravel()
        slice_arrays = {key: value[rows] for key, value in arrays.items()}
        noise = rng.normal(0, 1e-4, size=slice_arrays["observations"].shape).astype(np.float32)
        slice_arrays["observations"] = slice_arrays["observations"] + noise
        memory_bytes = max(memory_bytes, sum(v.nbytes for v in slice_arrays.values()))
        save_npz(os.path.join(directory, f"cube-double-play-v0-{index:03d}.npz"), slice_arrays)
        val_rows = rows[:episode_length]
        save_npz(
            os.path.join(directory, f"cube-double-play-v0-{index:03d}-val.npz"),
            {key: value[val_rows] for key, value in arrays.items()},
        )
    train = [p for p in os.listdir(directory) if not p.endswith("-val.npz")]
    return {
        "slices": len(train),
        "rows_per_slice": episodes_per_slice * episode_length,
        "dir_bytes": sum(os.path.getsize(os.path.join(directory, p)) for p in os.listdir(directory)),
        "train_bytes_on_disk": sum(os.path.getsize(os.path.join(directory, p)) for p in train),
        "slice_bytes_in_memory": memory_bytes,
        "train_bytes_in_memory_if_loaded_whole": memory_bytes * len(train),
    }


def measure_slice_streaming(directory: str, batches_per_slice: int) -> dict:
    """Run in a fresh process: stream every slice, put it on the device, sample jitted batches."""
    import jax

    from qgf.data import SliceDataset, to_device
    from qgf.data.chunks import sample_chunks_jit

    def rss_bytes() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    from qgf.data.load import _relabel_env

    slices = SliceDataset(directory, "cube-double-play-singletask-task2-v0")
    _relabel_env("cube-double-play-singletask-task2-v0")  # build the env before measuring the baseline
    before = rss_bytes()
    # ru_maxrss is the lifetime peak and includes transient start-up peaks (imports, building the
    # env) that have nothing to do with streaming: sample the current RSS during the stream instead.
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = before
    capacity = None
    key = jax.random.key(0)
    baseline = None
    reward_sum = 0.0
    start = time.perf_counter()
    for dataset in slices:
        capacity = capacity or dataset.size
        device_data = to_device(dataset, capacity=max(capacity, dataset.size))
        del dataset
        for _ in range(batches_per_slice):
            key, subkey = jax.random.split(key)
            batch = sample_chunks_jit(device_data, subkey, batch_size=256, horizon=5, discount=0.99)
            reward_sum += float(batch["rewards"].sum())
            peak = max(peak, rss_bytes())
        if baseline is None:
            baseline = rss_bytes()  # after imports, compilation and the first slice
        del device_data
    seconds = time.perf_counter() - start
    return {
        "peak_rss_bytes": peak,
        "process_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "process_maxrss_before_streaming_bytes": maxrss_before,
        "rss_before_first_slice_bytes": before,
        "rss_after_first_slice_bytes": baseline,
        "slices_streamed": len(slices),
        "seconds": round(seconds, 2),
        "checksum": reward_sum,
    }


def run(quick: bool = True) -> dict:
    work = tempfile.mkdtemp(prefix="qgf-bench-data-")
    try:
        length = 200 if quick else 1001
        episodes, val_episodes = (3, 1) if quick else (5, 1)
        results: dict = {"env": ENV, "quick": quick, "load_average_at_start": os.getloadavg()[0]}
        results["env_stepping"] = env_stepping(500 if quick else 3000)
        results["generation"] = [
            generation_speed(os.path.join(work, f"gen{w}"), w, episodes, val_episodes, length) for w in (1, 2)
        ]
        slice_dir = os.path.join(work, "slices", "cube-double-play-100m-v0")
        episodes_per_slice = 10 if quick else 100
        results["slices"] = build_slice_dir(os.path.join(work, "gen1"), slice_dir, 10, episodes_per_slice)
        command = [sys.executable, os.path.abspath(__file__), "--measure-slices", slice_dir]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results["slices"].update(json.loads(output.strip().splitlines()[-1]))
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _print_summary(results: dict) -> None:
    mb = 1e6
    env = results["env_stepping"]
    print(f"load average at start: {results['load_average_at_start']:.1f} (cores: {os.cpu_count()})")
    print(
        f"env stepping ({results['env']}, random actions, 1 process): {env['steps_per_second']:.0f} steps/s, "
        f"{env['steps_per_cpu_second']:.0f} steps per CPU-second"
    )
    for row in results["generation"]:
        print(
            f"generate, {row['workers']} worker(s): {row['steps']} steps in {row['seconds']} s = "
            f"{row['steps_per_second']:.0f} steps/s; {row['cpu_seconds']} CPU-s = "
            f"{row['steps'] / row['cpu_seconds']:.0f} steps per CPU-second incl. start-up, "
            f"{row['rollout_steps_per_cpu_second']:.0f} in the simulation loop"
        )
    s = results["slices"]
    print(
        f"slices: {s['slices']} x {s['rows_per_slice']} rows; on disk {s['dir_bytes'] / mb:.0f} MB "
        f"(train {s['train_bytes_on_disk'] / mb:.0f} MB), in memory {s['slice_bytes_in_memory'] / mb:.0f} MB "
        f"per slice, {s['train_bytes_in_memory_if_loaded_whole'] / mb:.0f} MB if loaded whole"
    )
    print(
        f"streaming all slices: peak RSS {s['peak_rss_bytes'] / mb:.0f} MB "
        f"(before the first slice {s['rss_before_first_slice_bytes'] / mb:.0f} MB, after it "
        f"{s['rss_after_first_slice_bytes'] / mb:.0f} MB), {s['seconds']} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--measure-slices", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_slices:
        print(json.dumps(measure_slice_streaming(args.measure_slices, batches_per_slice=20)))
        return
    results = run(quick=args.quick)
    _print_summary(results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
