"""Config sections: the settings that one component owns (an agent, a critic, goal-conditioned
training), declared as data next to that component's code and read without importing it.

A module declares its sections in a module-level literal named `CONFIG_SECTIONS`. It is read with
`ast.literal_eval` (`read_declarations`), so listing the keys, `qgf train --help` and building a
config never import the module (nor its JAX code):

    CONFIG_SECTIONS = {
        "fql": {
            "title": "FQL's one-step policy (QGF App. I Eq. 23)",
            "settings": {
                "fql_alpha": {"default": 300.0, "help": "fql: weight of the distillation term", "min": 0.0},
            },
        },
    }

- A setting's type is the type of its default: a float (write 300.0, not 300), int, bool, str, or
  a list of ints (a tuple of ints in the config). Optional bounds: "min" / "max" (inclusive),
  "above" / "below" (exclusive), "choices" (for strings). Values are coerced and bounds checked by
  `Section.build`, wherever the key is given (so a bad value fails even where it is ignored).
- Which runs a section applies to: an agent's section applies to the agents that list it (their
  "sections" in `qgf.agents`); any other section names its selector, `"applies": {"critic": "td"}`
  (shared fields of the config and the values that select it).
- `"check": "module:function"` names a function (values, config) -> None that raises a QGFError
  for combinations the bounds cannot express (dqc_horizon >= horizon); it is imported and called
  only for configs the section applies to.

A section's values are a frozen, hashable dataclass (`Section.values_class`), one class per
section name and settings, so equal values compare equal wherever they were built.

This module imports only the standard library, `qgf.errors` and `qgf.registry`; `qgf.config` and
`qgf.agents` build on it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import typing
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

from qgf.errors import QGFError
from qgf.registry import suggest

DECLARATION = "CONFIG_SECTIONS"
INTS = tuple[int, ...]
_BOUNDS = {"min": ">=", "max": "<=", "above": ">", "below": "<"}
_SETTING_KEYS = {"default", "help", "choices", *_BOUNDS}
_SECTION_KEYS = {"title", "settings", "applies", "check"}


# ------------------------------------------------------------------ reading declarations


def module_source(module: str) -> str:
    """The source text of `module` (a dotted name inside an installed package), found without
    importing it or its parent packages."""
    package, *parts = module.split(".")
    root = resources.files(package)
    candidates = [root.joinpath(*parts[:-1], f"{parts[-1]}.py"), root.joinpath(*parts, "__init__.py")]
    for candidate in candidates if parts else [root.joinpath("__init__.py")]:
        if candidate.is_file():
            return candidate.read_text()
    raise QGFError(f"internal: no source file for module {module}")


def read_declarations(source: str, names: tuple[str, ...], where: str) -> dict[str, Any]:
    """The module-level literals assigned to `names` in `source` (a module's text), by name."""
    if not any(name in source for name in names):  # most modules declare nothing: skip the parse
        return {}
    found: dict[str, Any] = {}
    for node in ast.parse(source, filename=where).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name) and target.id in names and node.value is not None:
                try:
                    found[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    raise QGFError(
                        f"{where}: {target.id} must be a plain literal (read without import)"
                    ) from None
    return found


def module_sections(module: str, source: str | None = None) -> tuple[Section, ...]:
    """The sections that `module` declares (its `CONFIG_SECTIONS`), in declaration order."""
    source = module_source(module) if source is None else source
    declared = read_declarations(source, (DECLARATION,), module).get(DECLARATION, {})
    if not isinstance(declared, dict):
        raise QGFError(f"{module}: {DECLARATION} must be a dict of section name -> section")
    return tuple(section_from_literal(name, body, module) for name, body in declared.items())


# ------------------------------------------------------------------ settings and sections


@dataclasses.dataclass(frozen=True)
class Setting:
    """One key of a section: its type (a typing hint), default, help text and bounds."""

    name: str
    hint: Any
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    bounds: tuple[tuple[str, float], ...] = ()  # (("min", 0.0), ("below", 1.0))

    def coerce(self, value: Any) -> Any:
        value = coerce(self.name, value, self.hint)
        if self.choices is not None and value not in self.choices:
            raise QGFError(
                f"bad value {value!r} for {self.name}{suggest(value, self.choices)}; "
                f"choose one of {', '.join(self.choices)}"
            )
        if any(not _within(value, kind, limit) for kind, limit in self.bounds):
            raise QGFError(f"{self.name} must be {self.range_text()}, got {value}")
        return value

    def range_text(self) -> str:
        bounds = dict(self.bounds)
        lower = [(k, bounds[k]) for k in ("min", "above") if k in bounds]
        upper = [(k, bounds[k]) for k in ("max", "below") if k in bounds]
        if lower and upper:
            (low_kind, low), (high_kind, high) = lower[0], upper[0]
            return (
                f"in {'[' if low_kind == 'min' else '('}{low:g}, {high:g}{']' if high_kind == 'max' else ')'}"
            )
        return " and ".join(f"{_BOUNDS[kind]} {limit:g}" for kind, limit in self.bounds)

    def describe(self) -> str:
        """'help (type; default X)', as `qgf train --help` lists it."""
        kind = "|".join(self.choices) if self.choices else type_name(self.hint)
        return f"{self.help} ({kind}; default {format_value(self.default)})"


@dataclasses.dataclass(frozen=True)
class Section:
    """A named group of settings with the rule that says which runs it applies to."""

    name: str
    title: str
    module: str
    settings: tuple[Setting, ...]
    applies: tuple[tuple[str, Any], ...] = ()  # shared key -> value; () for an agent's section
    check: str | None = None  # "module:function"
    agents: tuple[str, ...] = ()  # the agents that list it (filled in by qgf.agents)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(setting.name for setting in self.settings)

    def applies_to(self, config: Any) -> bool:
        """Whether this section is part of `config` (its shared fields already set)."""
        if self.applies:
            return all(getattr(config, key) == value for key, value in self.applies)
        return config.agent in self.agents

    @property
    def selector(self) -> str:
        """The runs it applies to, in words: 'critic=td', 'agents fql, edp'."""
        if self.applies:
            return ", ".join(f"{key}={format_value(value).lower()}" for key, value in self.applies)
        if not self.agents:
            return "no registered agent"
        return f"agent{'s' if len(self.agents) > 1 else ''} {', '.join(self.agents)}"

    @property
    def values_class(self) -> type:
        return _values_class(self.name, self.settings)

    def build(self, given: Mapping[str, Any]) -> Any:
        """The section's values: `given` (coerced and bounds-checked) over the defaults."""
        values = {s.name: s.coerce(given[s.name]) if s.name in given else s.default for s in self.settings}
        return self.values_class(**values)

    def run_check(self, values: Any, config: Any) -> None:
        if self.check:
            module, function = self.check.split(":", 1)
            getattr(importlib.import_module(module), function)(values, config)


def section_from_literal(name: str, body: Any, module: str) -> Section:
    """A `Section` from its declaration (see the module docstring); QGFError naming what is wrong."""
    where = f"{module}: config section {name!r}"
    if not isinstance(body, dict) or not isinstance(body.get("settings"), dict) or set(body) - _SECTION_KEYS:
        raise QGFError(f"{where} must be a dict with 'settings' and optionally {sorted(_SECTION_KEYS)}")
    settings = []
    for key, spec in body["settings"].items():
        if (
            not isinstance(spec, dict)
            or "default" not in spec
            or "help" not in spec
            or set(spec) - _SETTING_KEYS
        ):
            raise QGFError(
                f"{where}: setting {key!r} needs 'default' and 'help' (optional: {sorted(_BOUNDS)})"
            )
        default = spec["default"]
        hint = INTS if isinstance(default, list | tuple) else type(default)
        if hint not in (float, int, bool, str, INTS):
            raise QGFError(f"{where}: setting {key!r} has a default of unsupported type {hint.__name__}")
        choices = tuple(spec["choices"]) if "choices" in spec else None
        bounds = tuple((kind, float(spec[kind])) for kind in _BOUNDS if kind in spec)
        default = tuple(default) if hint is INTS else default
        settings.append(Setting(key, hint, default, str(spec["help"]), choices, bounds))
    applies = tuple(body.get("applies", {}).items())
    return Section(name, str(body.get("title", name)), module, tuple(settings), applies, body.get("check"))


@functools.cache
def _values_class(name: str, settings: tuple[Setting, ...]) -> type:
    """One frozen dataclass per section name and settings (so rediscovery reuses it)."""
    title = "".join(part.capitalize() for part in name.replace("_", "-").split("-")) + "Settings"
    fields = [(s.name, s.hint, dataclasses.field(default=s.default)) for s in settings]
    cls = dataclasses.make_dataclass(title, fields, frozen=True)
    cls.__doc__ = f"The settings of config section {name!r}."
    cls.__module__ = __name__
    return cls


def _within(value: float, kind: str, limit: float) -> bool:
    return {"min": value >= limit, "max": value <= limit, "above": value > limit, "below": value < limit}[
        kind
    ]


# ------------------------------------------------------------------ typed values


def type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "comma-separated ints"
    return getattr(hint, "__name__", str(hint))


def format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def coerce(name: str, value: Any, hint: Any) -> Any:
    """Return `value` as the setting's type; strings are parsed, other types are checked strictly."""
    bad = QGFError(
        f"bad value {value!r} for {name}: expected {type_name(hint)}"
        + (f" (e.g. {name}=256,256,256)" if typing.get_origin(hint) is tuple else "")
    )
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            parts = [p for p in text.replace(" ", ",").split(",") if p]
            try:
                value = [int(p) for p in parts]
            except ValueError:
                raise bad from None
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise bad
        return tuple(value)
    if hint is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise bad
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))  # accepts 5e5 and 500_000
            except ValueError:
                raise bad from None
            if not number.is_integer():
                raise bad
            return int(number)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config field type {hint!r} for {name}")


# --------------------------------------------------------------------------- any settings dataclass
# The coercion rules of config settings, for other frozen dataclasses of settings
# (e.g. `qgf.addons.base.AddonConfig`).


def check_setting_keys(settings_class: type, keys: Iterable[str], what: str = "setting") -> None:
    """A one-line QGFError, naming the closest fields, for a key that is no field of `settings_class`."""
    names = [field.name for field in dataclasses.fields(settings_class)]
    for key in keys:
        if key not in names:
            raise QGFError(f"unknown {what} {key!r}{suggest(key, names)}; valid: {', '.join(names)}")


def parse_assignments(
    items: Iterable[str], what: str, check_key: Callable[[str], None], hint_of: Callable[[str], Any]
) -> dict[str, Any]:
    """`key=value` strings -> {key: typed value}: each key checked by `check_key` (which raises
    the one-line error for an unknown key), each value coerced to `hint_of(key)`; `what` names
    an item in the error for one that is not of the form key=value."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise QGFError(f"{what} {item!r} is not of the form key=value")
        check_key(key)
        parsed[key] = coerce(key, raw.strip(), hint_of(key))
    return parsed


def parse_settings(settings_class: type, items: Iterable[str], what: str = "setting") -> dict[str, Any]:
    """`key=value` strings -> {field: typed value} for any settings dataclass, parsed as
    `parse_overrides` parses TrainConfig's (ints accept 5e5 and 500_000, bools true/false/1/0,
    tuples comma-separated ints); unknown keys fail with the closest field names."""
    hints = typing.get_type_hints(settings_class)
    return parse_assignments(
        items, what, lambda key: check_setting_keys(settings_class, [key], what), hints.__getitem__
    )


def coerce_settings(settings: Any) -> None:
    """Give every field of a (frozen) settings dataclass its declared type, in its `__post_init__`:
    strings are parsed, other values checked strictly (as TrainConfig's fields are)."""
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        value = coerce(field.name, getattr(settings, field.name), hints[field.name])
        object.__setattr__(settings, field.name, value)
