"""The package's import graph, read from the source: no import circle, and layers import downward.

Every ``import`` and ``from ... import`` statement of every module counts, at the top or inside a
function (a function-level import does not make a circle acceptable, it only hides it until run
time). ``from catalog_tool.io import desi`` is an edge to the module ``catalog_tool.io.desi``.
"""

from __future__ import annotations

import ast
import pathlib

import catalog_tool

PKG = pathlib.Path(catalog_tool.__file__).resolve().parent

#: Sub-packages and top-level modules, lowest layer first. A module may import its own package's
#: modules (no circle: see the first test) and anything in a lower layer; nothing in its own layer
#: outside its package, nothing above.
LAYERS = (
    ("catalog_tool", "errors"),
    ("threads", "batch", "config"),
    ("io",),
    ("preprocess", "select"),
    ("models", "sim", "vac"),
    ("train",),
    ("pipeline", "report"),
    ("cli",),
)


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = ("catalog_tool",) + path.relative_to(PKG).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: pathlib.Path, modules) -> set[tuple[str, int]]:
    """(module imported, line) for every catalog_tool import in the module ``name``."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, minus level - 1 steps
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import mod" imports the module pkg.mod; "from mod import name" the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in modules and t != name:
                found.add((t, node.lineno))
    return found


def _graph():
    modules = _modules()
    return modules, {m: _imports(m, p, modules) for m, p in modules.items()}


def test_the_graph_is_read_from_every_module_and_every_import():
    modules, graph = _graph()
    assert len(modules) > 80
    edges = {m: {t for t, _ in e} for m, e in graph.items()}
    # a top-level import, a "from package import module", and a function-level import
    assert "catalog_tool.io.readers" in edges["catalog_tool.io.release"]
    assert {"catalog_tool.io.desi", "catalog_tool.io.lamost"} <= edges["catalog_tool.io.readers"]
    assert "catalog_tool.pipeline.run" in edges["catalog_tool.cli"]  # inside the annotate command


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None. Iterative DFS."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for root in sorted(edges):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(edges[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(edges[nxt])))
    return None


def test_no_import_circle():
    _, graph = _graph()
    cycle = _find_cycle({m: {t for t, _ in e} for m, e in graph.items()})
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_circles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def _layer_of(module: str) -> tuple[int, str]:
    top = module.split(".")[1] if "." in module else module
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i, top
    raise AssertionError(f"{module} is in no layer of LAYERS: add it")


def test_layers_import_only_downward():
    _, graph = _graph()
    wrong = []
    for module, edges in graph.items():
        level, top = _layer_of(module)
        for target, line in edges:
            t_level, t_top = _layer_of(target)
            if t_top != top and t_level >= level:
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "imports that do not go down a layer:\n" + "\n".join(sorted(wrong))
