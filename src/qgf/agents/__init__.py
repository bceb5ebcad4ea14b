"""The registry of training methods (agents). One list: the CLI, config validation, the contract
tests and the benchmarks read it.

    from qgf.agents import AGENT_NAMES, agent_class
    agent = agent_class("fql").create(seed, obs_dim, action_dim, config)

Modules are imported on first use, so `qgf --help` and config validation stay light.
"""

from __future__ import annotations

import importlib

from qgf.errors import QGFError

# name -> (module, class). Order is the order of tables and help texts.
_AGENTS: dict[str, tuple[str, str]] = {
    "qgf": ("qgf.agents.qgf", "QGFAgent"),
    "fql": ("qgf.agents.fql", "FQLAgent"),
    "edp": ("qgf.agents.edp", "EDPAgent"),
    "dac": ("qgf.agents.diffusion", "DACAgent"),
    "qsm-bc": ("qgf.agents.diffusion", "QSMBCAgent"),
    "qam": ("qgf.agents.qam", "QAMAgent"),
    "bam": ("qgf.agents.qam", "BAMAgent"),
    "qam-fql": ("qgf.agents.qam", "QAMFQLAgent"),
    "qam-edit": ("qgf.agents.qam", "QAMEditAgent"),
}
AGENT_NAMES: tuple[str, ...] = tuple(_AGENTS)


def agent_class(name: str):
    """The agent class registered as `name`; a one-line error with close matches otherwise."""
    if name not in _AGENTS:
        import difflib

        close = difflib.get_close_matches(str(name), AGENT_NAMES, n=3, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise QGFError(f"unknown agent {name!r}{hint}; choose one of {', '.join(AGENT_NAMES)}")
    module, attribute = _AGENTS[name]
    return getattr(importlib.import_module(module), attribute)
