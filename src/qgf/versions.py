"""Installed package versions, recorded with every dataset, run and result (reproducibility: from
ogbench 1.2.0 on, the version also fixes single-task success semantics)."""

from __future__ import annotations

import platform
from importlib import metadata

RECORDED_PACKAGES = ("qgf", "jax", "jaxlib", "flax", "optax", "numpy", "ogbench")


def package_version(name: str) -> str | None:
    """The installed version of `name`, or None if it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str]:
    """Python and the versions that decide whether a run can be reproduced."""
    versions = {"python": platform.python_version()}
    for package in RECORDED_PACKAGES:
        versions[package] = package_version(package) or "not installed"
    return versions
