"""qgf's persistent compilation cache is bounded, so JAX locks its reads and writes across
processes (an unbounded one let a process read another's half-written entry and segfault)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """import json, jax
from qgf.compilation import use_compilation_cache
path = use_compilation_cache()
jax.jit(lambda x: x * 2.0)(1.0)  # one program through the cache
print(json.dumps([str(path), jax.config.jax_compilation_cache_max_size]))
"""


def probe(tmp_path, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    clean.update(QGF_COMPILATION_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu", **env)
    command = [sys.executable, "-c", PROBE]
    done = subprocess.run(command, env=clean, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_cache_is_bounded_so_that_jax_locks_it(tmp_path):
    from qgf.compilation import CACHE_MAX_BYTES

    path, max_size = probe(tmp_path)
    assert path == str(tmp_path / "cache") and max_size == CACHE_MAX_BYTES
    assert (tmp_path / "cache" / ".lockfile").exists()  # JAX's lock of a bounded cache was taken


def test_a_bound_the_user_set_is_kept(tmp_path):
    _, max_size = probe(tmp_path, JAX_COMPILATION_CACHE_MAX_SIZE=str(2**20))
    assert max_size == 2**20
