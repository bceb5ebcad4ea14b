"""One registry type for every named concept (agents, critics, add-ons, estimators, ...).

A `Registry` maps a name to an entry that is imported on first use ("module:attribute" strings),
so listing names, validating a config and `qgf --help` stay light. Unknown names fail with one
line that names the kind, the closest valid names and every choice:

    AGENTS = Registry("agent", {"qgf": "qgf.agents.qgf:QGFAgent", "fql": "qgf.agents.fql:FQLAgent"})
    AGENTS.names          # ('qgf', 'fql'), in registration order
    AGENTS.check("fq")    # QGFError: unknown agent 'fq' (did you mean 'fql'?); choose one of qgf, fql
    AGENTS.get("fql")     # the FQLAgent class (imports qgf.agents.fql once)

`suggest(word, options)` is the "did you mean" fragment that every error message of the package uses.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Iterator
from typing import Any

from qgf.errors import QGFError


def suggest(word: Any, options: Iterable[str], n: int = 3, cutoff: float = 0.5) -> str:
    """' (did you mean 'a' or 'b'?)' for the (at most `n`) options closest to `word`, or '' when none
    is close (difflib's similarity ratio at least `cutoff`)."""
    matches = difflib.get_close_matches(str(word), list(options), n=n, cutoff=cutoff)
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)" if matches else ""


def unknown_name_error(kind: str, name: Any, options: Iterable[str]) -> QGFError:
    """The one-line error for an unknown `kind` name: close matches, then every valid choice."""
    options = list(options)
    return QGFError(f"unknown {kind} {name!r}{suggest(name, options)}; choose one of {', '.join(options)}")


class Registry:
    """name -> entry, in registration order; entries given as 'module:attribute' load lazily."""

    def __init__(self, kind: str, entries: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._loaded: dict[str, Any] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def register(self, name: str, entry: Any) -> None:
        """Add `name`; `entry` is the object itself or a lazy 'module:attribute' reference."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, name: Any) -> str:
        """`name` if registered (nothing is imported), else the one-line QGFError."""
        if name not in self._entries:
            raise unknown_name_error(self.kind, name, self._entries)
        return name

    def get(self, name: Any) -> Any:
        """The entry registered as `name`, importing its module on first use."""
        self.check(name)
        if name not in self._loaded:
            entry = self._entries[name]
            if isinstance(entry, str) and ":" in entry:
                module, attribute = entry.split(":", 1)
                entry = getattr(importlib.import_module(module), attribute)
            self._loaded[name] = entry
        return self._loaded[name]

    def items(self) -> Iterator[tuple[str, Any]]:
        """(name, loaded entry) for every entry (imports them all)."""
        return ((name, self.get(name)) for name in self._entries)


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Any, Any]:
    """(`__getattr__`, `__dir__`) for a package whose public names live in submodules that load on
    first use: `exports` maps each name to its module. A name may not be a submodule's name too:
    once that submodule is imported, the package attribute would be the module, not the name
    (`from qgf.experiments import plan` once gave the module that way)."""
    import importlib.util
    import sys

    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    import pkgutil

    submodules = {info.name for info in pkgutil.iter_modules(folders)}
    shadowed = sorted(set(exports) & submodules)
    if shadowed:
        raise ValueError(f"{package}: exported names {shadowed} are also submodules of the package")

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module-level hook
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
