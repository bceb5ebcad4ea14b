"""JAX's persistent compilation cache, as qgf uses it: `qgf evaluate` (through `qgf.policy`) and
the deploy loader (`qgf.deploy.load`) keep compiled programs on disk so that a later process of
the same programs loads them instead of compiling. Standard library at module level (jax inside
`use_compilation_cache`).
"""

from __future__ import annotations

import os
from pathlib import Path

COMPILATION_CACHE_ENV = "QGF_COMPILATION_CACHE"  # a directory, or off / 0 to compile afresh
_OFF = ("", "0", "off", "false", "no", "none")
# JAX's unbounded cache (its default, max size -1) writes entries in place and reads them without a
# lock, so a process can read another's half-written entry and crash (a segfault in the cache read,
# seen with two test workers beside sweeps under load). A bounded cache takes a file lock around
# every read and write; this bound is far above what qgf's programs fill, and evicts the least
# recently used entries beyond it.
CACHE_MAX_BYTES = 4 * 2**30


def default_compilation_cache() -> Path:
    """~/.cache/qgf/jax (or $XDG_CACHE_HOME/qgf/jax)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "qgf" / "jax"


def use_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Keep compiled programs on disk (JAX's persistent compilation cache), so that a later
    evaluation of a run of the same shapes loads its samplers instead of compiling them again
    (~2-3 CPU seconds per sampler at the cpu preset: most of an evaluation's start-up beyond the
    env construction). A cached program is the same executable, so results are bit-identical.

    The directory is `directory`, else $QGF_COMPILATION_CACHE, else `default_compilation_cache()`;
    QGF_COMPILATION_CACHE=off disables it, and a cache directory already configured in JAX (by
    the user, or JAX_COMPILATION_CACHE_DIR) is kept. Returns the directory in use, or None."""
    import jax

    setting = os.environ.get(COMPILATION_CACHE_ENV)
    if directory is None and setting is not None and setting.strip().lower() in _OFF:
        return None
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    path = Path(directory or setting or default_compilation_cache())
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile as before
    jax.config.update("jax_compilation_cache_dir", str(path))
    # JAX caches only programs that took >= 1 s to compile by default; a sampler may take less.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    bound_cache_for_locking()
    return path


def bound_cache_for_locking() -> None:
    """Give JAX's persistent cache a size bound (CACHE_MAX_BYTES) unless one is set, so that its
    reads and writes take a file lock (needs `filelock`, which Ray installs; without it, unchanged)."""
    import jax

    try:
        import filelock  # noqa: F401
    except ImportError:
        return
    if jax.config.jax_compilation_cache_max_size == -1:
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
