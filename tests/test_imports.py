"""The package's import graph has no cycle.

Walks every module of `qgf` and collects the qgf modules each one imports anywhere: at module
level and inside functions (a deferred import keeps a light module light, but it is still a
dependency; a cycle hidden in a function is still a cycle). Only `if TYPE_CHECKING:` blocks are
left out. A cycle means two rooms that cannot be understood, tested or loaded apart; the test
names it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import qgf

PACKAGE_ROOT = Path(qgf.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """qgf modules imported anywhere in the module except under `if TYPE_CHECKING:`."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "qgf")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != "qgf":
                    continue
                found.add(source)
                for alias in node.names:  # `from qgf.pkg import submodule`
                    found.add(f"{source}.{alias.name}")
            elif isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                continue
            else:
                visit(ast.iter_child_nodes(node))

    visit(tree.body)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE_ROOT.rglob("*.py"))
    modules = {_module_name(path): path for path in paths}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = _imports(tree, name, path.name == "__init__.py")
        edges = set()
        for target in targets:
            # importing qgf.a.b runs qgf.a first: an edge to every package on the way
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                candidate = ".".join(parts[:end])
                if candidate in modules and candidate != name and not name.startswith(candidate + "."):
                    edges.add(candidate)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_detects_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_sees_real_edges():
    graph = import_graph()
    assert "qgf.errors" in graph["qgf.config"]
    assert "qgf.registry" in graph and "qgf.errors" in graph["qgf.registry"]


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The package's layers (docs/architecture.md, "Layout"): a module may import its own layer and the
# layers below it, never one above. Lower layers know nothing of how they are used.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        (
            "qgf.errors",
            "qgf.registry",
            "qgf.sections",
            "qgf.fileio",
            "qgf.versions",
            "qgf.progress",
            "qgf.plots",
            "qgf.precision",
            "qgf.envs",
        ),
    ),
    (
        "learning",
        (
            "qgf.nets",
            "qgf.flow",
            "qgf.guidance",
            "qgf.critics",
            "qgf.data",
            "qgf.config",
            "qgf.agents",
            "qgf.training",
            "qgf.checkpoint",
            "qgf.addons",
        ),
    ),
    ("using runs", ("qgf.policy", "qgf.evaluation", "qgf.analysis", "qgf.toy", "qgf.online")),
    ("studies and commands", ("qgf.experiments", "qgf.demo", "qgf.benchmark", "qgf.commands", "qgf.cli")),
]


def layer_of(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        own = layer_of(module)
        for target in sorted(targets):
            other = layer_of(target)
            if own is not None and other is not None and other > own:
                found.append(f"{module} ({LAYERS[own][0]}) imports {target} ({LAYERS[other][0]})")
    return found


def test_every_module_has_a_layer():
    unplaced = [m for m in import_graph() if m != "qgf" and layer_of(m) is None]
    assert not unplaced, f"place these modules in a layer of LAYERS: {unplaced}"


def test_no_module_imports_a_layer_above_its_own():
    assert layer_violations({"qgf.nets": {"qgf.evaluation.run"}}) == [
        "qgf.nets (learning) imports qgf.evaluation.run (using runs)"
    ]
    violations = layer_violations(import_graph())
    assert not violations, "\n".join(violations)


def test_evaluation_workers_import_only_numpy_side_modules():
    """Env worker processes import qgf.evaluation.workers: it must not pull in JAX code."""
    assert import_graph()["qgf.evaluation.workers"] <= {"qgf.envs", "qgf.errors", "qgf.evaluation", "qgf"}
