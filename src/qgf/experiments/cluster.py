"""Where a sweep's jobs run, and that they stop with it.

- `connect(address)`: an existing cluster (`HOST:PORT` of a head started with `ray start --head`,
  `ray://HOST:10001` for Ray Client, or `auto`). The address is checked before anything starts, a
  head that does not answer is a one-line error within `CONNECT_TIMEOUT_S`, and the cluster's
  authentication mode is followed: Ray 2.60's `ray start --head` turns token authentication on
  whenever a token exists on the head's machine (`~/.ray/auth_token`, which every local `ray.init`
  creates), while a driver given an explicit address connects without one. We ask the head (a
  GCS request in a subprocess, bounded in time) and, when it wants a token and one is available
  here (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`), switch this driver to
  token mode, as `RAY_AUTH_MODE=token` would.
- `embedded_instance(num_cpus)`: the local instance of a sweep without `--address`, with a
  watchdog process (`qgf.experiments.watchdog`) that kills every process of the instance when
  the driver exits or is killed.
- `DriverGuard`: lets a job check that the sweep that started it still holds the sweep directory's
  lock; a job whose driver is gone stops before it writes (`check`) or while it runs (`watch`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from qgf.errors import QGFError
from qgf.experiments import watchdog

CONNECT_TIMEOUT_S = 10.0  # the head's port must accept a TCP connection within this
PROBE_TIMEOUT_S = 15.0  # and its GCS answer within this (Ray itself waits much longer)
AUTH_ENV = "RAY_AUTH_MODE"
ADDRESS_HELP = "HOST:PORT of a head node (`ray start --head --port PORT`), ray://HOST:10001 or auto"
_HOST_PORT = re.compile(r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$")


# ------------------------------------------------------------------ connecting to a cluster


def parse_address(address: str) -> tuple[str, str, int]:
    """('gcs' | 'client' | 'auto', host, port) of a --address; a one-line QGFError otherwise."""
    text = address.strip()
    if text == "auto":
        return "auto", "", 0
    kind, rest = ("client", text[len("ray://") :]) if text.startswith("ray://") else ("gcs", text)
    match = _HOST_PORT.match(rest)
    port = int(match["port"]) if match else 0
    if not match or not 0 < port < 65536:
        raise QGFError(f"--address {address!r} is not a Ray address: give {ADDRESS_HELP}")
    return kind, match["ipv6"] or match["host"], port


def wait_for_port(host: str, port: int, address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Return once HOST:PORT accepts a TCP connection; a one-line QGFError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(
                (host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))
            ):
                return
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            if time.monotonic() + 0.5 >= deadline:
                raise QGFError(
                    f"no Ray cluster answers at {address} ({reason} for {timeout:.0f} s): start its head "
                    "with `ray start --head --port PORT` or fix --address"
                ) from None
            time.sleep(0.5)


_PROBE = """
import json, sys
from ray._raylet import AuthenticationTokenLoader, GcsClient
out = {"token": bool(AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))}
print("ready", flush=True)
try:
    GcsClient(address=sys.argv[1]).internal_kv_get(b"session_name", namespace=b"session", timeout=5)
    out["status"] = "ok"
except Exception as exc:
    text = str(exc)
    auth = "InvalidAuthToken" in text or "Authentication" in type(exc).__name__
    out["status"] = "auth" if auth else "error"
    out["message"] = text.splitlines()[0] if text else type(exc).__name__
print(json.dumps(out), flush=True)
"""


def probe_head(address: str, auth_mode: str | None) -> dict:
    """Ask the GCS at `address` for its session name from a subprocess (Ray's own client retries for
    about a minute; this one waits PROBE_TIMEOUT_S once the subprocess has imported Ray), in
    `auth_mode` ('token', or None for this environment's)."""
    env = dict(os.environ)
    if auth_mode:
        env[AUTH_ENV] = auth_mode
    probe = subprocess.Popen(
        [sys.executable, "-c", _PROBE, address],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,  # unbuffered, so that select sees whether the answer has come
    )
    try:
        ready = probe.stdout.readline().decode().strip()  # the import of Ray takes seconds on a busy machine
        if ready == "ready":
            answered, _, _ = select.select([probe.stdout], [], [], PROBE_TIMEOUT_S)
            if not answered:
                raise QGFError(
                    f"{address} accepts connections but no Ray head answered within {PROBE_TIMEOUT_S:.0f} s: "
                    "give the head's GCS port (`ray start --head --port PORT`) as --address"
                )
        line = probe.stdout.readline()
    finally:
        probe.kill()
        probe.wait()
    try:
        return json.loads(line.decode())
    except (json.JSONDecodeError, UnicodeDecodeError):
        failed = f"the probe of Ray failed ({ready or 'no output'})"
        return {"status": "error", "token": False, "message": failed}


def follow_cluster_auth(address: str) -> str:
    """Make this driver use the authentication mode the head at `address` expects; returns it."""
    explicit = os.environ.get(AUTH_ENV)
    answer = probe_head(address, None)
    if answer["status"] == "ok":
        return explicit or "disabled"
    if answer["status"] == "error":
        raise QGFError(f"the Ray head at {address} did not answer: {answer['message']}")
    where = "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"
    if explicit is None and answer["token"] and probe_head(address, "token")["status"] == "ok":
        enable_token_auth()
        return "token"
    if explicit is not None and explicit.lower() != "token":
        raise QGFError(
            f"the Ray cluster at {address} uses token authentication and {AUTH_ENV}={explicit} is set "
            f"here: unset {AUTH_ENV} (or set it to token) and have the head node's token here ({where})"
        )
    if answer["token"]:
        raise QGFError(
            f"the Ray cluster at {address} rejects the authentication token found here ({where}): "
            "copy the head node's ~/.ray/auth_token to this machine or set RAY_AUTH_TOKEN to it"
        )
    raise QGFError(
        f"the Ray cluster at {address} uses token authentication and no token was found here ({where}): "
        "copy the head node's ~/.ray/auth_token to this machine or set RAY_AUTH_TOKEN to it"
    )


def enable_token_auth() -> None:
    """What RAY_AUTH_MODE=token at start-up does, for this process (Ray caches its config)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ[AUTH_ENV] = "token"
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def connect(address: str) -> None:
    """ray.init on the cluster at `address`: checked, bounded in time, its auth mode followed."""
    import ray

    kind, host, port = parse_address(address)
    if kind != "auto":
        wait_for_port(host, port, address)
    if kind == "gcs":
        follow_cluster_auth(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise QGFError(f"could not join the Ray cluster at {address}: {first}") from None


# ------------------------------------------------------------------ the embedded instance


@contextlib.contextmanager
def embedded_instance(num_cpus: int) -> Iterator[None]:
    """A local Ray instance whose processes all die with this driver: a watchdog process (its own
    session, so Ctrl-C and a killed process group spare it) records them while the driver runs
    and SIGKILLs them as soon as the driver's end of its stdin pipe closes (exit or kill)."""
    import ray

    keeper = subprocess.Popen(
        [sys.executable, "-I", watchdog.__file__, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            object_store_memory=100 * 2**20,
        )
        yield
    finally:
        try:
            ray.shutdown()
        finally:
            keeper.stdin.close()  # the watchdog kills any process of the instance still running
            with contextlib.suppress(subprocess.TimeoutExpired):
                keeper.wait(timeout=watchdog.KILL_FOR_S + 5)


# ------------------------------------------------------------------ jobs check their driver


@dataclass(frozen=True)
class DriverGuard:
    """The sweep directory's lock file and the token its driver wrote into it. Picklable: it travels
    with every job. The driver is alive while the file still names its token (a later sweep on the
    directory writes its own) and it holds the flock -- or, where a filesystem keeps flocks to one
    node, while it touches the file (`beat`, every few seconds) within `STALE_S`."""

    lock_path: str
    token: str
    STALE_S: ClassVar[float] = 120.0

    def driver_alive(self) -> bool:
        import fcntl

        try:
            with open(self.lock_path) as handle:
                if self.token not in handle.read():
                    return False  # another sweep has the directory now
                try:
                    fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True  # the driver still holds its exclusive lock
                fcntl.flock(handle, fcntl.LOCK_UN)
                return time.time() - os.fstat(handle.fileno()).st_mtime < self.STALE_S
        except FileNotFoundError:
            raise QGFError(
                f"{self.lock_path} does not exist on node {socket.gethostname()}: the sweep directory "
                "must be on a filesystem every node of the cluster sees (docs/experiments.md)"
            ) from None

    def beat(self) -> None:
        """The driver's heartbeat."""
        with contextlib.suppress(OSError):
            os.utime(self.lock_path)

    def check(self) -> None:
        """Raise (so nothing is written) when the sweep that started this job has gone."""
        if not self.driver_alive():
            raise DriverGone(f"the sweep that started this job has ended ({self.lock_path}); nothing written")

    @contextlib.contextmanager
    def watch(self, interval: float = 1.0) -> Iterator[None]:
        """Within the block, end this process (exit code 3) once the driver is gone."""
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(interval):
                try:
                    alive = self.driver_alive()
                except QGFError:
                    alive = False
                if not alive:
                    os._exit(3)

        thread = threading.Thread(target=poll, name="qgf-driver-guard", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()


class DriverGone(QGFError):
    """A job found that the sweep which started it is no longer running."""


def node_identity() -> dict[str, str]:
    """Where this job runs: the host name, and in a Ray worker Ray's node ID and IP."""
    info = {"host": socket.gethostname()}
    ray = sys.modules.get("ray")  # a Ray worker has it imported and connected
    if ray is not None and ray.is_initialized():
        info["node_id"] = ray.get_runtime_context().get_node_id()
        info["node_ip"] = ray.util.get_node_ip_address()
    return info
