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
    return path
