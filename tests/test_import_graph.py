"""The house's one-way rule (docs/architecture.md): each package imports only from its own layer or below,
the feature packages never loop, and the simulator knows nothing of the gateway but its crypto and XML.

Read from the source with ``ast``, every import included (function-level and ``TYPE_CHECKING`` ones too), so
a cycle cannot hide behind a lazy import."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"

# Lowest first. A package may import from its own layer and every layer below it, never above.
LAYERS: list[set[str]] = [
    {"errors", "xml", "crypto", "settings"},
    {"registry"},
    {"store"},
    {"wechat"},
    {"observability"},
    {"credentials"},
    {"authorizations"},
    {"access", "onboarding", "binding", "proxy", "callbacks", "delivery", "catalog"},
    {"container"},
    {"http"},
    {"simulator"},
    {"cli"},
    {"__main__"},
]
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}
SIMULATOR_MAY_IMPORT = {"crypto", "xml", "simulator"}


def _room(module: str) -> str:
    """``gateway.store.tables`` -> ``store``; ``gateway.errors`` -> ``errors``."""
    return module.split(".")[1]


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(GATEWAY.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gateway":
                # names of the package itself (``__version__``) are no room
                yield from (
                    f"gateway.{a.name}"
                    for a in node.names
                    if (GATEWAY / a.name).exists() or (GATEWAY / f"{a.name}.py").exists()
                )
            elif node.module.startswith("gateway."):
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("gateway."))


def _edges() -> set[tuple[str, str, str]]:
    """(importing room, imported room, importing module) for every import across rooms."""
    edges = set()
    for module, path in _modules():
        if module == "gateway":
            continue
        for target in _imports(path):
            if _room(module) != _room(target):
                edges.add((_room(module), _room(target), module))
    return edges


def test_every_room_has_a_layer() -> None:
    rooms = {_room(module) for module, _ in _modules() if module != "gateway"}
    assert rooms - set(LAYER_OF) == set(), "a new package needs its place in LAYERS"


def test_imports_flow_one_way() -> None:
    upward = sorted(
        f"{module} imports gateway.{target} ({source} is below {target})"
        for source, target, module in _edges()
        if LAYER_OF[target] > LAYER_OF[source]
    )
    assert upward == []


def test_feature_packages_never_loop() -> None:
    graph: dict[str, set[str]] = {}
    for source, target, _ in _edges():
        graph.setdefault(source, set()).add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for step in graph.get(start, set()) - seen:
            if step == goal or reaches(step, goal, seen | {step}):
                return True
        return False

    loops = sorted(f"{a} <-> {b}" for a, b, _ in _edges() if reaches(b, a, {b}))
    assert loops == []


def test_the_simulator_imports_only_crypto_and_xml() -> None:
    strays = sorted(
        f"{module} imports {t}"
        for s, t, module in _edges()
        if s == "simulator" and t not in SIMULATOR_MAY_IMPORT
    )
    assert strays == []


@pytest.mark.parametrize("room", ["errors", "xml", "crypto"])
def test_the_pure_leaves_import_no_framework(room: str) -> None:
    """Pure modules: no web framework, no database, no HTTP client."""
    path = GATEWAY / f"{room}.py"
    frameworks = ("litestar", "sqlalchemy", "sqlmodel", "httpx", "aiohttp")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert sorted(name for name in names if name.split(".")[0] in frameworks) == []
