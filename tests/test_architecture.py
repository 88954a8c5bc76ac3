"""The architecture: subpackages in one order of layers, no import cycles, no private names across modules.

Rules checked on the source (``ast``, nothing imported), over every module of
the tree:

* each module imports only from its own layer and the layers before it in
  :data:`LAYERS`, imports inside functions included; only ``cli`` may import
  anything, and only the public API (``epitensor/__init__.py``) imports from the
  top. Imports under ``if TYPE_CHECKING:`` never run and are not counted;
* the graph of imports between modules, imports inside functions included, has
  no cycle (so no cycle inside a layer either);
* no module uses a private name (``_x``) of another package module, neither
  imported (``from epitensor.x import _y``, at any level) nor reached as an
  attribute: ``x._y`` where ``x`` is an imported package module, or
  ``obj._y`` where ``_y`` is defined by another package module and not by this
  one (so ``model._genome_path`` outside avocado.py). ``epitensor._utils`` is the
  shared private helper package: importing its public names is allowed;
* no module switches matplotlib's backend or sets threads or environment
  variables when it is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import epitensor

PACKAGE = Path(epitensor.__file__).resolve().parent

#: The layers, lowest first: each imports only from itself and those before it.
LAYERS = [
    "_utils",
    "parallel",
    "viz",
    "genome",
    "io",
    "store",
    "nn",
    "train",
    "estimators",
    "workflows",
    "evaluation",
    "demo",
    "cli",
]


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {
        _name(path): ast.parse(path.read_text(), filename=str(path))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _layer(module: str) -> str | None:
    """The layer of a package module (``None`` for the public API, ``epitensor`` itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str, tree: ast.Module, modules: set[str]) -> list[tuple[str, int, bool]]:
    """``(module, line, at_top)`` of every package import that can run (TYPE_CHECKING left out)."""
    found: list[tuple[str, int, bool]] = []

    def target(module: str, alias: str) -> str:
        candidate = f"{module}.{alias}"
        return candidate if candidate in modules else module

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                for grandchild in child.orelse:
                    visit(grandchild, top)
                continue
            if isinstance(child, ast.Import):
                found.extend(
                    (a.name, child.lineno, top)
                    for a in child.names
                    if a.name.split(".")[0] == "epitensor"
                )
            elif isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level:  # relative import: resolve against this module's package
                    package = name.split(".")[: len(name.split(".")) - child.level]
                    if (PACKAGE / "/".join(name.split(".")[1:]) / "__init__.py").exists():
                        package = name.split(".")[: len(name.split(".")) - child.level + 1]
                    module = ".".join(package + ([module] if module else []))
                if module.split(".")[0] == "epitensor":
                    found.extend((target(module, a.name), child.lineno, top) for a in child.names)
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, top and not inner)

    visit(tree, True)
    return [(module, line, top) for module, line, top in found if module != name]


def _layer_violations(modules: dict[str, ast.Module]) -> list[str]:
    names = set(modules)
    bad = []
    for name, tree in modules.items():
        layer = _layer(name)
        if layer is None or layer == "cli":
            continue
        assert layer in LAYERS, f"{name} is in no layer: add its subpackage to LAYERS"
        for module, line, _ in _imports(name, tree, names):
            other = _layer(module)
            if other is None:
                bad.append(f"{name}:{line} imports the public API ({module})")
            elif LAYERS.index(other) > LAYERS.index(layer):
                bad.append(f"{name}:{line} imports {module} ({layer} -> {other})")
    return bad


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if colour.get(nxt) is None and (found := visit(nxt)):
                return found
        colour[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if colour.get(node) is None and (found := visit(node)):
            return found
    return None


def _import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Imports between modules, inside functions too (not the public API's or the CLI's)."""
    names = set(modules)
    graph = {}
    for name, tree in modules.items():
        if name == "epitensor" or _layer(name) == "cli":
            continue  # the public API and the CLI import the layers; nothing imports them
        graph[name] = {m for m, _, _ in _imports(name, tree, names) if m in names}
    return graph


def test_every_import_points_down_the_layers():
    bad = _layer_violations(_modules())
    assert not bad, "imports against the order of layers:\n" + "\n".join(bad)


def test_no_import_cycle_between_package_modules():
    cycle = _cycle(_import_graph(_modules()))
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_every_subpackage_is_a_layer():
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert subpackages | modules == set(LAYERS)


def _private_uses(name: str, tree: ast.Module) -> list[str]:
    uses = []
    aliases: dict[str, str] = {}  # local name -> package module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("epitensor"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    if node.module != name and f"{node.module}.{alias.name}" != "epitensor._utils":
                        uses.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                else:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("epitensor.") and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and aliases.get(node.value.id, name) != name
        ):
            uses.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return uses


def _defined_names(tree: ast.Module) -> set[str]:
    """Every name a module defines or assigns (functions, classes, attributes, arguments)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def _private_attributes(name: str, tree: ast.Module, others: set[str]) -> list[str]:
    """``obj._x`` where ``_x`` is not this module's but another package module's private."""
    own = _defined_names(tree)
    return [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.attr not in own
        and node.attr in others
    ]


def test_no_private_name_used_across_modules():
    modules = _modules()
    defined = {name: _defined_names(tree) for name, tree in modules.items()}
    offences = {}
    for name, tree in modules.items():
        others = {
            n for other, names in defined.items() if other != name for n in names if n[:1] == "_"
        }
        uses = _private_uses(name, tree) + _private_attributes(name, tree, others)
        if uses:
            offences[name] = uses
    assert not offences, "private names used across modules: " + "; ".join(
        f"{name} ({', '.join(uses)})" for name, uses in offences.items()
    )


def _import_time_effects(tree: ast.Module) -> list[str]:
    """Calls at module level (or in a class body) that change the process: backend, threads, env."""
    effects = []
    suspicious = (
        "matplotlib.use",
        "plt.switch_backend",
        "torch.set_num_threads",
        "torch.set_num_interop_threads",
        "os.environ[",
        "os.environ.setdefault",
        "os.putenv",
        "threadpool_limits",
    )
    stack = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call | ast.Assign) and any(
            s in ast.unparse(node) for s in suspicious
        ):
            effects.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
            continue
        stack.extend(ast.iter_child_nodes(node))
    return effects


def test_importing_a_module_changes_nothing_outside_it():
    offences = {n: e for n, t in _modules().items() if (e := _import_time_effects(t))}
    assert not offences, f"side effects at import: {offences}"
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert "matplotlib.use(" not in source, "draw on matplotlib.figure.Figure; never switch backend"


def test_the_checks_catch_what_they_should():
    """The rules themselves, on small made-up modules."""
    names = {"epitensor.store.compendium", "epitensor.workflows.impute", "epitensor.nn.module"}
    tree = ast.parse(
        "from epitensor.store.compendium import _chunk\n"
        "from epitensor.workflows import impute\nimpute._load(1)\n"
    )
    assert len(_private_uses("epitensor.estimators.avocado", tree)) == 2
    assert (
        _private_uses("epitensor.store.compendium", ast.parse("from epitensor._utils import warn"))
        == []
    )
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    reach = ast.parse("def f(store):\n    return store._group\n")
    assert _private_attributes("epitensor.workflows.explain", reach, {"_group"}) == [
        "line 2: store._group"
    ]
    assert (
        _private_attributes("epitensor.store.compendium", ast.parse("self._group = 1"), {"_group"})
        == []
    )
    # an import inside a function counts, one under TYPE_CHECKING does not
    inner = ast.parse("def f():\n    from epitensor.workflows.impute import impute\n")
    assert _imports("epitensor.nn.module", inner, names) == [
        ("epitensor.workflows.impute", 2, False)
    ]
    upward = {"epitensor.nn.module": inner}
    assert _layer_violations(upward) == [
        "epitensor.nn.module:2 imports epitensor.workflows.impute (nn -> workflows)"
    ]
    typing_only = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from epitensor.workflows import impute\n"
    )
    assert _imports("epitensor.nn.module", typing_only, names) == []
    top = ast.parse("from epitensor import Avocado\n")
    assert _layer_violations({"epitensor.nn.module": top}) == [
        "epitensor.nn.module:1 imports the public API (epitensor)"
    ]
    assert _import_time_effects(ast.parse("import matplotlib\nmatplotlib.use('Agg')\n"))
    assert _import_time_effects(ast.parse("import os\nos.environ['X'] = '1'\n"))
    assert not _import_time_effects(ast.parse("def f():\n    torch.set_num_threads(1)\n"))
