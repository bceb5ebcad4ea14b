"""The watchdog of a sweep's embedded Ray instance, run as a script (standard library only, Linux).

While the driver runs, it records every Ray process the driver started (a child whose command is
Ray's: the GCS, the raylet, Ray's Python services) and everything below them (the raylet's
dashboard and runtime-env agents, the Ray workers, the env processes the jobs start), twice a
second. When its stdin closes -- the driver finished, exited or was killed, even with SIGKILL -- it
SIGKILLs the recorded processes and their descendants until none is left. Ray's own cleanup misses
the agents when the driver is killed (they outlive it, ignoring SIGTERM), and a worker that
outlives its driver could still write into the sweep directory.

    python3 -I watchdog.py DRIVER_PID   (started by `qgf.experiments.cluster.embedded_instance`)
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

POLL_S = 0.5
KILL_FOR_S = 10.0  # keep killing this long: a raylet being killed may still be starting workers


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process (a start time tells a reused pid apart)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":  # a zombie is dead already
            table[int(name)] = (int(fields[1]), fields[19])
    return table


def command_of(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ")
    except OSError:
        return b""


def is_ray(command: bytes) -> bool:
    return b"/ray/" in command or command.startswith(b"ray::")


def below(roots: set[int], table: dict[int, tuple[int, str]]) -> set[int]:
    """`roots` and all their descendants in `table`."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, stack = set(), [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


class Recorder:
    def __init__(self, driver: int):
        self.driver = driver
        self.driver_command = command_of(driver)
        self.seen: dict[int, str] = {}  # pid -> start time
        self.checked: set[tuple[int, str]] = set()  # the driver's children already looked at

    def scan(self) -> dict[int, tuple[int, str]]:
        table = processes()
        roots = {pid for pid, start in self.seen.items() if table.get(pid, (0, ""))[1] == start}
        for pid, (parent, start) in table.items():
            if parent == self.driver and (pid, start) not in self.checked:
                command = command_of(pid)
                if is_ray(command):
                    roots.add(pid)
                # a child forked but not yet exec'd still shows the driver's command line: look
                # again next time (under load the raylet can sit there past a scan, and its agents
                # were then never recorded)
                if command != self.driver_command:
                    self.checked.add((pid, start))
        for pid in below(roots, table) - {os.getpid(), self.driver}:
            self.seen[pid] = table[pid][1]
        return table

    def kill_all(self, seconds: float = KILL_FOR_S) -> int:
        killed = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            table = self.scan()
            alive = [pid for pid, start in self.seen.items() if table.get(pid, (0, ""))[1] == start]
            if not alive:
                break
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except OSError:
                    pass
            time.sleep(0.05)
        return len(killed)


def main(argv: list[str]) -> int:
    recorder = Recorder(int(argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver; the pipe tells us the rest
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([stdin], [], [], POLL_S)
        if ready and not os.read(stdin, 4096):
            break  # EOF: the driver closed the pipe or died
        recorder.scan()
    recorder.kill_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
