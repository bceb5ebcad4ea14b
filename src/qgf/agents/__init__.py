"""The registry of training methods (agents), found in the modules of this package without a
central list and without importing them. The CLI, config validation, the contract tests and the
benchmarks read it.

    from qgf.agents import AGENT_NAMES, agent_class
    agent = agent_class("fql").create(seed, obs_dim, action_dim, config)

Each module of the package (every folder on `qgf.agents.__path__`) may declare two module-level
literals, read with `ast.literal_eval` so that listing agents, building a config and `qgf --help`
import no method (and no JAX):

    AGENTS = {"fql": {"class": "FQLAgent", "order": 20, "sections": ["fql", "q-term", "policy-optimiser"]}}
    CONFIG_SECTIONS = {"fql": {...}}         # the settings the module owns (qgf.sections)

An agent's "sections" are the config sections it reads (declared in any module of the package, e.g.
`policy-optimiser` in `base`); "order" places it in tables and help texts (ties by name). A module
is imported when one of its agents is first used (`agent_class`). docs/architecture.md, "Adding an
agent", walks through a new one. Imports only `qgf.errors`, `qgf.registry` and `qgf.sections`.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from qgf.errors import QGFError
from qgf.registry import Registry
from qgf.sections import DECLARATION, Section, module_sections, read_declarations

AGENTS_DECLARATION = "AGENTS"
_AGENT_KEYS = {"class", "order", "sections"}


@dataclasses.dataclass(frozen=True, eq=False)
class Discovery:
    """What the package's modules declare: the agents (lazy classes, in table order), each agent's
    config sections, and every section the modules declare (agent sections know their agents)."""

    registry: Registry
    agent_sections: dict[str, tuple[str, ...]]
    sections: tuple[Section, ...]


def discovery() -> Discovery:
    """The agents and sections of the modules on the package's current search path."""
    return _discover(tuple(str(path) for path in __path__))


def agent_class(name: str):
    """The agent class registered as `name`; a one-line error with close matches otherwise."""
    return discovery().registry.get(name)


def agent_sections(name: str) -> tuple[str, ...]:
    """The config sections agent `name` reads (its own, and shared ones such as policy-optimiser)."""
    found = discovery()
    return found.agent_sections[found.registry.check(name)]


def __getattr__(name: str) -> Any:
    if name == "AGENT_NAMES":  # computed on access, so an agent added to the search path appears
        return discovery().registry.names
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _discover(paths: tuple[str, ...]) -> Discovery:
    agents: list[tuple[float, str, str, tuple[str, ...]]] = []  # (order, name, entry, sections)
    declared: dict[str, Section] = {}
    owners: dict[str, str] = {}
    for folder in paths:
        for path in sorted(Path(folder).glob("*.py")):
            if path.name.startswith("_"):
                continue
            module = f"{__name__}.{path.stem}"
            source = path.read_text()
            found = read_declarations(source, (AGENTS_DECLARATION,), module)
            for section in module_sections(module, source) if DECLARATION in source else ():
                if section.name in declared:
                    first = declared[section.name].module
                    raise QGFError(
                        f"config section {section.name!r} is declared by both {first} and {module}"
                    )
                declared[section.name] = section
            for name, entry in found.get(AGENTS_DECLARATION, {}).items():
                if name in owners:
                    raise QGFError(f"agent {name!r} is declared by both {owners[name]} and {module}")
                if not isinstance(entry, dict) or "class" not in entry or set(entry) - _AGENT_KEYS:
                    raise QGFError(
                        f"{module}: AGENTS[{name!r}] must be a dict with 'class' (and 'order', 'sections')"
                    )
                owners[name] = module
                sections = tuple(entry.get("sections", ()))
                agents.append((float(entry.get("order", 1000)), name, f"{module}:{entry['class']}", sections))
    agents.sort(key=lambda agent: agent[:2])
    for _, name, _, sections in agents:
        for section in sections:
            if section not in declared:
                raise QGFError(
                    f"agent {name!r} reads config section {section!r}, which no module of qgf.agents declares"
                )
    users = {
        section: tuple(name for _, name, _, sections in agents if section in sections) for section in declared
    }
    ordered = [section for _, _, _, sections in agents for section in sections]
    ordered += [section for section in declared if section not in ordered]  # declared but unused
    return Discovery(
        registry=Registry("agent", {name: entry for _, name, entry, _ in agents}),
        agent_sections={name: sections for _, name, _, sections in agents},
        sections=tuple(
            dataclasses.replace(declared[name], agents=users[name]) for name in dict.fromkeys(ordered)
        ),
    )
