"""Module boundaries of the package: no import cycles, no private names across modules.

Rules checked on the source (``ast``, nothing imported):

* the graph of **module-level** imports between package modules has no cycle
  (imports inside functions are allowed to point anywhere: they run after every
  module is loaded, and the CLI uses them to start fast);
* no module uses a private name (``_x``) of another package module, neither
  imported (``from epitensor.x import _y``, at any level) nor reached as an
  attribute: ``x._y`` where ``x`` is an imported package module, or
  ``obj._y`` where ``_y`` is defined by another package module and not by
  this one (so ``model._genome_path`` outside avocado.py, ``store._group``
  outside store.py).
  ``epitensor._utils`` is the shared private helper module: importing it and its
  public names is allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import epitensor

PACKAGE = Path(epitensor.__file__).resolve().parent


def _modules() -> dict[str, ast.Module]:
    return {
        f"epitensor.{path.stem}" if path.stem != "__init__" else "epitensor": ast.parse(
            path.read_text(), filename=str(path)
        )
        for path in sorted(PACKAGE.glob("*.py"))
    }


def _module_level_imports(tree: ast.Module) -> set[str]:
    """Package modules imported at module level (inside ``if``/``try`` blocks too)."""
    found: set[str] = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("epitensor")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("epitensor"):
            if node.module == "epitensor":
                found |= {f"epitensor.{a.name}" for a in node.names}
            found.add(node.module)
        elif isinstance(node, ast.If | ast.Try):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue  # typing-only imports never run
            stack.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                stack.extend(handler.body)
    return found


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


def test_no_import_cycle_between_package_modules():
    modules = _modules()
    graph = {
        name: {m for m in _module_level_imports(tree) if m in modules and m != name}
        for name, tree in modules.items()
    }
    graph.pop("epitensor")  # __init__ imports nothing of the package but the version
    cycle = _cycle(graph)
    assert cycle is None, f"module-level import cycle: {' -> '.join(cycle)}"


def _private_uses(name: str, tree: ast.Module) -> list[str]:
    uses = []
    aliases: dict[str, str] = {}  # local name -> package module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("epitensor"):
            for alias in node.names:
                if node.module == "epitensor":
                    aliases[alias.asname or alias.name] = f"epitensor.{alias.name}"
                elif alias.name.startswith("_") and node.module != name:
                    uses.append(f"line {node.lineno}: from {node.module} import {alias.name}")
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


def test_the_checks_catch_what_they_should():
    """The rules themselves, on small made-up modules."""
    tree = ast.parse(
        "from epitensor.store.compendium import _chunk\nfrom epitensor import export\nexport._load(1)\n"
    )
    assert len(_private_uses("epitensor.estimators.avocado", tree)) == 2
    assert _private_uses("epitensor.store.compendium", ast.parse("from epitensor._utils import warn")) == []
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    reach = ast.parse("def f(store):\n    return store._group\n")
    assert _private_attributes("epitensor.workflows.explain", reach, {"_group"}) == ["line 2: store._group"]
    assert _private_attributes("epitensor.store.compendium", ast.parse("self._group = 1"), {"_group"}) == []
    inner = ast.parse("def f():\n    from epitensor.estimators.avocado import Avocado\n")
    assert _module_level_imports(inner) == set()
