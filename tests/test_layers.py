"""The layers of segdl, kept by walking every import of the package with `ast`.

    cli -> api, bars -> cluster -> batch, archive -> file, stream -> core -> errors, _version

A module may import from its own layer or below, never above; no import cycle, even through
function-local or type-checking imports; no leading-underscore name imported from another
package (a private name stays in its package).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segdl"

# The layer of each part of the package, bottom first; a module takes its longest prefix.
LAYERS = {
    "segdl._version": 0,
    "segdl.errors": 0,
    "segdl.core": 1,
    "segdl.file": 2,
    "segdl.stream": 2,
    "segdl.batch": 3,
    "segdl.archive": 3,
    "segdl.cluster": 4,
    "segdl.api": 5,
    "segdl.bars": 5,
    "segdl.progress": 5,
    "segdl.cli": 6,
    "segdl.__main__": 7,
    "segdl": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[best]


def package_of(module: str) -> str:
    path = MODULES[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, name or None, line) for every import of segdl in `module`."""
    path = MODULES[module]
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("segdl")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_of(module).split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "segdl" and not target.startswith("segdl."):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    found.append((sub, None, node.lineno))
                else:
                    found.append((target, alias.name, node.lineno))
    return found


GRAPH = {m: sorted({t for t, _, _ in imports(m)} - {m}) for m in MODULES}


def test_every_module_has_a_layer() -> None:
    assert all(layer(m) >= 0 for m in MODULES)
    assert set(GRAPH) == set(MODULES)
    assert all(t in MODULES for targets in GRAPH.values() for t in targets), GRAPH


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_reaches_up(module: str) -> None:
    upward = [
        f"{module}:{line} imports {target} (layer {layer(target)} > {layer(module)})"
        for target, _, line in imports(module)
        if layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_from_another_package(module: str) -> None:
    taken = [
        f"{module}:{line} takes {target}.{name}"
        for target, name, line in imports(module)
        if name is not None
        and name.startswith("_")
        and not name.startswith("__")
        and package_of(target) != package_of(module)
    ]
    assert not taken, "\n".join(taken)


def test_no_import_cycle() -> None:
    # Tarjan's strongly connected components: any with two modules or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_only_core_http_names_the_transport_implementation() -> None:
    """The rest of the package uses the interface and factories of `segdl.core.http`, so that
    another implementation goes beside the requests one without touching them."""
    naming = [
        module
        for module, targets in GRAPH.items()
        if "segdl.core.http.transport" in targets and not module.startswith("segdl.core.http")
    ]
    assert not naming, naming


def test_the_layer_check_sees_what_it_must() -> None:
    """The walker itself: relative imports resolve, and an upward import would be caught."""
    assert "segdl.core.http.semantics" in GRAPH["segdl.core.probe"]
    assert "segdl.errors" in GRAPH["segdl.core.retry"]
    assert layer("segdl.cli.batch") > layer("segdl.api") > layer("segdl.core.scheduler")
    assert layer("segdl.core.http.lean") == layer("segdl.core") == 1
