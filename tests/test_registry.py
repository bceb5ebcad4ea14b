"""qgf.registry: lazy loading, registration order, one-line errors with close matches."""

import pytest

from qgf.errors import QGFError
from qgf.registry import Registry, suggest, unknown_name_error


def test_lazy_entry_is_imported_on_first_get_only():
    registry = Registry("codec", {"json": "json:dumps", "direct": len})
    assert registry.names == ("json", "direct")
    assert "json" in registry and "yaml" not in registry and len(registry) == 2
    import json

    assert registry.get("json") is json.dumps
    assert registry.get("direct") is len
    assert dict(registry.items()) == {"json": json.dumps, "direct": len}


def test_check_does_not_import(monkeypatch):
    registry = Registry("thing", {"ghost": "qgf_no_such_module_xyz:Thing"})
    assert registry.check("ghost") == "ghost"  # no import happens: the module does not exist
    with pytest.raises(ModuleNotFoundError):
        registry.get("ghost")


def test_unknown_name_error_names_close_matches_and_choices():
    registry = Registry("agent", {"qgf": object(), "fql": object(), "edp": object()})
    with pytest.raises(QGFError) as error:
        registry.get("fq1")
    message = str(error.value)
    assert message.startswith("unknown agent 'fq1' (did you mean 'fql'")
    assert message.endswith("choose one of qgf, fql, edp")
    assert "\n" not in message


def test_suggest_is_empty_when_nothing_is_close():
    assert suggest("zzzzzz", ["qgf", "fql"]) == ""
    assert suggest("robustqq", ["robustq", "cfgrl"]) == " (did you mean 'robustq'?)"
    assert "choose one of a, b" in str(unknown_name_error("x", "c", ["a", "b"]))


def test_double_registration_is_an_error():
    registry = Registry("critic", {"iql": object()})
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("iql", object())


def test_lazy_exports_load_on_first_use_and_refuse_a_name_that_is_a_submodule():
    import qgf.experiments
    from qgf.registry import lazy_exports

    getattr_, dir_ = lazy_exports("qgf.experiments", {"load_spec": "qgf.experiments.spec"})
    assert getattr_("load_spec").__name__ == "load_spec" and "load_spec" in dir_()
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        getattr_("missing")
    with pytest.raises(ValueError, match=r"\['jobs'\] are also submodules"):
        lazy_exports("qgf.experiments", {"jobs": "qgf.experiments.jobs"})
    assert qgf.experiments.plan.__name__ == "plan"
