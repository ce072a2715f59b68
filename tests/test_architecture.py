"""The package's import rules, checked by reading its source (``ast``).

- Private means private: no module imports another module's underscore names
  (``from .x import _helper``) or reaches into them (``x._helper``).
- Imports run one way: the graph of imports between the package's modules,
  function-local imports included, has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import multimodal_seg

PACKAGE_DIR = Path(multimodal_seg.__file__).parent
PACKAGE = "multimodal_seg"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path, module: str) -> str:
    return module if path.name == "__init__.py" else module.rsplit(".", 1)[0]


MODULES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, package: str) -> str | None:
    if node.level == 0:
        return node.module
    base = package.split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, modules: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every import of a package module."""
    path = modules[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path, module)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(node, package)
            if not source or not source.startswith(PACKAGE):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:  # "from . import stages": a module, not a name
                    found.append((sub, None, node.lineno))
                else:
                    found.append((source, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE):
                    found.append((alias.name, None, node.lineno))
    return found


def _module_aliases(module: str, modules: dict[str, Path]) -> dict[str, str]:
    """Local names bound to package modules (``from . import stages``, ``import x.y as z``)."""
    path = modules[module]
    tree = ast.parse(path.read_text())
    package = _package_of(path, module)
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(node, package)
            for alias in node.names:
                if source and f"{source}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules and alias.asname:
                    aliases[alias.asname] = alias.name
    return aliases


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_uses(modules: dict[str, Path]) -> list[str]:
    """Every import or attribute use of another module's underscore name."""
    offences = []
    for module, path in modules.items():
        where = f"{path.parent.name}/{path.name}"
        for source, name, line in _imports(module, modules):
            if name is not None and _is_private(name) and source != module:
                offences.append(f"{where}:{line} imports {name} from {source}")
        aliases = _module_aliases(module, modules)
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and _is_private(node.attr)):
                offences.append(f"{where}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return offences


def test_no_module_imports_another_modules_private_names():
    offences = _private_uses(MODULES)
    assert not offences, "private names used across modules:\n" + "\n".join(offences)


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module in modules:
        for source, _, _ in _imports(module, modules):
            target = source
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != module:
                graph[module].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_imports_have_no_cycle():
    cycle = _find_cycle(_graph(MODULES))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("source,expected", [
    ("from .b import _x\n", ["a.py:1 imports _x from multimodal_seg.b"]),
    ("from . import b\nb._x\n", ["a.py:2 uses multimodal_seg.b._x"]),
    ("from .b import x\nfrom . import b\nb.x\n", []),
])
def test_the_walker_finds_private_uses(tmp_path, source, expected):
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(source)
    (pkg / "b.py").write_text("x = 1\n_x = 2\n")
    modules = {"multimodal_seg": pkg / "__init__.py", "multimodal_seg.a": pkg / "a.py",
               "multimodal_seg.b": pkg / "b.py"}
    assert [o.split("/", 1)[1] for o in _private_uses(modules)] == expected


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
