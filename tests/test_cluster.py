"""Sweeps on a real Ray cluster and the end of a sweep: a head node started with Ray's own
`ray start --head` (loopback, its own temp dir and ports, token authentication as Ray 2.60 turns it
on) runs a tiny sweep through `--address` with the embedded run's results; bad and dead addresses
are one-line errors; a killed driver leaves no process of its Ray instance and writes nothing more."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import qgf
from qgf.errors import QGFError
from qgf.experiments import cluster
from qgf.experiments.spec import parse_spec
from test_experiments import TOY_OVERRIDES

TASK = "cube-single-play-singletask-task1-v0"
GENERATED = {"episodes": 2, "val_episodes": 1, "episode_length": 30}
EVALUATION = {"episodes": 2, "weights": [0.0, 0.5], "workers": 0, "num_envs": 1, "max_episode_steps": 8}
SWEEP = [sys.executable, "-m", "qgf.cli", "sweep"]
SRC = str(Path(qgf.__file__).resolve().parents[1])


def tiny_spec(data_dir, **evaluation):
    return {
        "name": "tiny",
        "preset": "tiny",
        "seeds": [0],
        "tasks": [TASK],
        "overrides": dict(TOY_OVERRIDES),
        "data": {"dir": str(data_dir)} if data_dir else GENERATED,
        "agents": [{"name": "qgf", "samplers": ["qgf"]}],
        "evaluation": EVALUATION | evaluation,
    }


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def child_env():
    """This test's environment with this checkout first on the path, for Ray's workers too."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]).rstrip(":")}


def alive(pids):
    """The pids that are running (a zombie has ended)."""
    running = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] != "Z":
                    running.append(pid)
        except OSError:
            pass
    return running


def group_members(pgid):
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[2]) == pgid:
                        found.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return alive(found)


@pytest.fixture
def head():
    """`ray start --head` on loopback in its own temp dir and process group (stopped by killing
    that group: `ray stop` would stop every Ray instance of the machine)."""
    ray_cli = shutil.which("ray") or pytest.skip("no `ray` command on PATH")
    port, *others = free_ports(6)
    command = [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
    temp_dir = tempfile.mkdtemp(prefix="qgf-ray-")  # short: Ray's socket paths must fit in 107 bytes
    command += [f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    for flag, value in zip(
        ("dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
         "runtime-env-agent-port"),
        others,
        strict=True,
    ):  # fmt: skip
        command.append(f"--{flag}={value}")
    env = child_env()
    env.pop("RAY_AUTH_MODE", None)  # Ray's default: token authentication when a token exists
    started = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = started.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(started.pid, signal.SIGKILL)  # the `ray start` process itself is still there
        pytest.skip("`ray start --head` did not finish within 60 s")
    if started.returncode != 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started.pid, signal.SIGKILL)
        pytest.skip(f"`ray start --head` cannot run here: {output.strip().splitlines()[-1:]}")
    try:
        yield f"127.0.0.1:{port}", started.pid, output
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while group_members(started.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not group_members(started.pid), "the head's processes outlived it"
        shutil.rmtree(temp_dir, ignore_errors=True)


def success_and_returns(sweep_dir):
    from qgf.evaluation.results import read_results

    found = {}
    for path in sorted(Path(sweep_dir).glob("evals/**/results.json")):
        results = read_results(path)
        for item in results.results:
            found[(str(path.relative_to(sweep_dir)), item.label, item.weight)] = (
                item.episode_success,
                item.episode_return,
            )
    return found


@pytest.mark.slow
def test_a_sweep_through_address_on_a_ray_start_head_equals_the_embedded_one(head, tmp_path):
    """The same tiny sweep (generate -> train -> evaluate) embedded and through --address, at the same
    time (each runs one job at a time, so together they fill 2 cores), and three refused drivers."""
    address, _, output = head
    assert "Token authentication is enabled" in output  # Ray's default since ~/.ray/auth_token exists
    spec = tmp_path / "tiny.toml"
    spec.write_text(_toml(tiny_spec(None)))
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    default = {key: value for key, value in child_env().items() if key != "RAY_AUTH_MODE"}
    cases = {
        "embedded": (["--num-cpus", "2"], {}, None),
        "cluster": (["--address", address], {}, None),
        "no-token": (["--address", address], {"HOME": str(empty_home)}, "and no token was found here"),
        "bad-token": (["--address", address], {"RAY_AUTH_TOKEN": "0" * 32}, "rejects the authentication"),
        "disabled": (["--address", address], {"RAY_AUTH_MODE": "disabled"}, "unset RAY_AUTH_MODE"),
    }
    started = {
        name: subprocess.Popen(
            [*SWEEP, str(spec), "--out", str(tmp_path / name), "--no-progress", *extra],
            env={**default, **change},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (extra, change, _) in cases.items()
    }
    for name, process in started.items():
        out, err = process.communicate(timeout=300)
        message = cases[name][2]
        if message is None:
            assert process.returncode == 0, out + err[-3000:]
        else:  # one line, exit 2
            assert process.returncode == 2 and err.count("\n") == 1 and message in err, err
    runs = {name: success_and_returns(tmp_path / name) for name in ("embedded", "cluster")}
    assert len(runs["cluster"]) == 2 and runs["cluster"] == runs["embedded"]
    status = json.loads((tmp_path / "cluster" / "sweep-status.json").read_text())
    nodes = {record["node"]["node_id"] for record in status["job_seconds"].values()}
    assert len(nodes) == 1 and all(len(node) == 56 for node in nodes)  # every job on the head's one node


def _toml(document):
    """A spec document as TOML (tables last), for the CLI."""
    lines, tables = [], []
    for key, value in document.items():
        if isinstance(value, dict):
            tables.append(f"[{key}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in value.items()))
        elif key == "agents":
            for agent in value:
                tables.append("[[agents]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in agent.items()))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n\n" + "\n\n".join(tables) + "\n"


@pytest.mark.parametrize("address", ["garbage", "127.0.0.1:99999", "ray://nohost", "host:", ":6379"])
def test_a_malformed_address_is_one_line_before_anything_starts(tmp_path, address):
    from qgf.experiments.runner import run_sweep

    with pytest.raises(QGFError, match="is not a Ray address: give HOST:PORT"):
        run_sweep(parse_spec(tiny_spec(None)), tmp_path / "sweep", address=address, progress=False)
    assert not (tmp_path / "sweep").exists()


def test_well_formed_addresses_parse():
    assert cluster.parse_address("127.0.0.1:6379") == ("gcs", "127.0.0.1", 6379)
    assert cluster.parse_address("ray://head.example:10001") == ("client", "head.example", 10001)
    assert cluster.parse_address("[::1]:6379") == ("gcs", "::1", 6379)
    assert cluster.parse_address("auto") == ("auto", "", 0)


def test_an_unreachable_address_fails_in_bounded_time_naming_it():
    (port,) = free_ports(1)  # nothing listens there
    start = time.monotonic()
    with pytest.raises(QGFError, match=f"no Ray cluster answers at 127.0.0.1:{port} .*Connection refused"):
        cluster.wait_for_port("127.0.0.1", port, f"127.0.0.1:{port}", timeout=1.5)
    assert 1.0 <= time.monotonic() - start < 3.0


def test_a_port_that_is_not_a_ray_head_is_one_line(monkeypatch):
    with socket.socket() as server:  # accepts connections, never speaks gRPC
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setattr(cluster, "PROBE_TIMEOUT_S", 3.0)
        with pytest.raises(QGFError, match=f"{address} accepts connections but no Ray head answered"):
            cluster.follow_cluster_auth(address)


# ------------------------------------------------------------------ a killed driver


def test_a_killed_sweep_leaves_no_ray_process_and_writes_nothing_more(tmp_path):
    """SIGKILL the driver while its first job (data generation) runs: within a few seconds no
    process it started remains, and nothing in the sweep directory changes afterwards."""
    spec = tmp_path / "tiny.toml"
    document = tiny_spec(None)
    document["data"] = {"episodes": 40, "val_episodes": 1, "episode_length": 200}  # a generate job of ~10 s
    spec.write_text(_toml(document))
    sweep_dir = tmp_path / "sweep"
    driver = subprocess.Popen(
        [*SWEEP, str(spec), "--out", str(sweep_dir), "--no-progress", "--num-cpus", "2"],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(sweep_dir.glob("logs/generate_*.log")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(sweep_dir.glob("logs/generate_*.log")), "the generate job did not start within 60 s"
        time.sleep(1.0)
        started = descendants(driver.pid)
        assert any(b"raylet" in _command(pid) for pid in started) and len(started) >= 5
        before = snapshot(sweep_dir)
        driver.kill()
        driver.wait()
        # the watchdog notices within 0.5 s and kills within a second, also at load 12; 30 s is for
        # a loaded CI (two runs beside studies left the two agents alive at 5 s and at 15 s: the
        # watchdog had seen the raylet before its exec and never looked again, the next test), and
        # Ray's agents, without the watchdog, outlive the driver indefinitely
        keepers = [pid for pid in started if b"watchdog.py" in _command(pid)]
        deadline = time.monotonic() + 30
        while alive(started) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {pid: (_command(pid)[:60], _state(pid)) for pid in alive(started)}
        assert not left, (
            f"processes of the killed sweep still running (command, (state, parent)): {left}; "
            f"watchdog {keepers} alive: {alive(keepers)}; load {os.getloadavg()}"
        )
        time.sleep(1.0)
        assert snapshot(sweep_dir) == before
    finally:
        for pid in alive(descendants(driver.pid)):
            os.kill(pid, signal.SIGKILL)


def test_the_watchdog_records_a_ray_child_that_execs_after_its_first_scan(tmp_path):
    """A child seen between fork and exec shows the driver's command line; the watchdog must look
    at it again once it has exec'd Ray's binary, or its children (the agents) outlive a kill."""
    from qgf.experiments import watchdog

    binary = tmp_path / "ray" / "raylet.py"  # a path with Ray's marker, like the real raylet's
    binary.parent.mkdir()
    sleeper = "[sys.executable, '-c', 'import time; time.sleep(60)']"
    binary.write_text(f"import subprocess, sys, time\nsubprocess.Popen({sleeper})\ntime.sleep(60)\n")
    recorder = watchdog.Recorder(os.getpid())
    pid = os.fork()
    if pid == 0:  # the child: wait past the first scan, then become "Ray"
        try:
            time.sleep(1.5)
            os.execv(sys.executable, [sys.executable, str(binary)])
        finally:
            os._exit(1)
    child = pid
    try:
        recorder.scan()  # the child has forked and not yet exec'd
        assert child not in recorder.seen
        deadline = time.monotonic() + 30
        while len(descendants(child)) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        (grandchild,) = descendants(child)
        recorder.scan()
        assert {child, grandchild} <= set(recorder.seen)
        assert recorder.kill_all(seconds=5) == 2
        assert not alive([child, grandchild])
    finally:
        for pid in alive(descendants(child)) + [child]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(child, 0)


def descendants(root):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    children.setdefault(int(handle.read().rsplit(")", 1)[1].split()[1]), []).append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return alive(found)


def _command(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ")
    except OSError:
        return b""


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def snapshot(directory):
    files = [p for p in Path(directory).rglob("*") if p.is_file()]
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


# ------------------------------------------------------------------ jobs check their driver


HOLDER = """import pathlib, sys, time
from qgf.experiments.runner import SweepLock
lock = SweepLock(pathlib.Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


def test_a_job_writes_nothing_once_its_driver_is_gone(tmp_path):
    from qgf.experiments.runner import SweepLock

    lock = SweepLock(tmp_path)
    guard = lock.guard
    assert guard.driver_alive()
    holder = subprocess.Popen(  # another process holding the lock, as a driver does, then killed
        [sys.executable, "-c", HOLDER, str(tmp_path / "other")],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    other_lock = tmp_path / "other" / ".sweep.lock"
    other = cluster.DriverGuard(str(other_lock), other_lock.read_text().split("token ")[1])
    assert other.driver_alive()
    holder.kill()
    holder.wait()
    assert other.driver_alive()  # unlocked, but touched recently: where flocks are per node, alive
    os.utime(other_lock, (0, time.time() - cluster.DriverGuard.STALE_S - 1))
    assert not other.driver_alive()  # unlocked and no heartbeat: gone
    with pytest.raises(cluster.DriverGone, match="nothing written"):
        other.check()
    lock.release()
    guard.beat()
    assert guard.driver_alive()
    os.utime(lock.path, (0, time.time() - cluster.DriverGuard.STALE_S - 1))
    assert not guard.driver_alive()  # released, no heartbeat: gone
    again = SweepLock(tmp_path)  # a later sweep on the directory: the old jobs are not its jobs
    assert again.guard.driver_alive() and not guard.driver_alive()
    again.release()
    with pytest.raises(QGFError, match="must be on a filesystem every node of the cluster sees"):
        cluster.DriverGuard(str(tmp_path / "elsewhere" / ".sweep.lock"), "x").driver_alive()


def test_run_logged_refuses_a_job_of_a_gone_sweep(tmp_path):
    from qgf.experiments.jobs import Job
    from qgf.experiments.runner import run_logged

    lock_path = tmp_path / ".sweep.lock"
    lock_path.write_text("pid 1 on nowhere token abc")  # nobody holds it, nor touches it
    os.utime(lock_path, (0, 0))
    out = str(tmp_path / "out")
    job = Job("evaluate/x", "evaluate", "sweep", out, params={}, deps=(), cpus=1, gpus=0, cost=1)
    report = run_logged(job, str(tmp_path / "job.log"), cluster.DriverGuard(str(lock_path), "abc"))
    assert not report["ok"] and "has ended" in report["error"] and not (tmp_path / "out").exists()
    assert report["node"]["host"] == socket.gethostname()
