"""Layering rules from STYLE.md, checked on the source: which way every import points.

- The core (``bot/``) defines the contracts and imports no implementation: not ``engine``,
  ``connectors`` or ``plugins``. The one exception is the composition root, ``bot/main.py``.
- ``engine/``, ``connectors/`` and ``plugins/`` implement the contracts and import only the core
  (and, for a connector, its own package); a connector never imports another connector.
- Plugins (built-in and the example) use only the plugin API, ``bot.plugin``.
- The modules of the core import each other without a cycle.
- The core and plugins import no platform SDK and no ``llama_cpp``; only ``connectors/<platform>``
  imports its SDK; only the local engine imports ``llama_cpp``.

Imports inside functions and under ``TYPE_CHECKING`` count too. Run with ``-s`` to see each
package's imports.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("bot", "engine", "connectors", "plugins")
SDKS = {"discord": "discord", "telegram": "telegram", "slack_bolt": "slack", "slack_sdk": "slack"}
COMPOSITION_ROOT = "bot.main"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, absolute, as written (``from a.b import c`` gives ``a.b``)."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    yield from parse_imports(path.read_text(), package)


def parse_imports(source: str, package: str) -> Iterator[str]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join([*base, node.module] if node.module else base)
            elif node.module:
                yield node.module


def python_files(*tops: str) -> list[Path]:
    return sorted(path for top in tops for path in (ROOT / top).rglob("*.py"))


def project_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports."""
    return {name for name in imported_modules(path) if top(name) in PROJECT}


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def test_print_each_packages_imports() -> None:
    for package in PROJECT:
        outside: set[str] = set()
        inside: set[str] = set()
        for path in python_files(package):
            for name in imported_modules(path):
                (inside if top(name) in PROJECT else outside).add(name if top(name) in PROJECT else top(name))
        print(f"\n{package}/ imports project modules: {', '.join(sorted(inside)) or '-'}")
        print(f"{package}/ imports libraries: {', '.join(sorted(outside)) or '-'}")


def test_the_core_imports_no_implementation_except_the_composition_root() -> None:
    offenders = [
        f"{module_name(path)} imports {name}"
        for path in python_files("bot")
        if module_name(path) != COMPOSITION_ROOT
        for name in project_imports(path)
        if top(name) != "bot"
    ]
    assert not offenders


def test_only_the_composition_root_imports_engines_and_connectors() -> None:
    importers = {
        module_name(path)
        for path in python_files(*PROJECT)
        for name in project_imports(path)
        if top(name) in {"engine", "connectors"} and top(module_name(path)) != top(name)
    }
    assert importers == {COMPOSITION_ROOT}


@pytest.mark.parametrize("package", ["engine", "connectors", "plugins"])
def test_implementations_import_only_the_core(package: str) -> None:
    offenders = []
    for path in python_files(package):
        own = ".".join(module_name(path).split(".")[:2])  # a connector may import its own package
        for name in project_imports(path):
            if top(name) == "bot":
                continue
            if package == "connectors" and (name == own or name.startswith(own + ".")):
                continue
            if package == "engine" and top(name) == "engine":
                continue
            offenders.append(f"{module_name(path)} imports {name}")
    assert not offenders


def test_plugins_use_only_the_plugin_api() -> None:
    paths = python_files("plugins") + sorted((ROOT / "examples").rglob("*.py"))
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in paths
        for name in imported_modules(path)
        if top(name) in PROJECT and name != "bot.plugin"
    ]
    assert not offenders


def test_the_core_has_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for path in python_files("bot"):
        graph[module_name(path)] = {name for name in project_imports(path) if top(name) == "bot"}
    modules = set(graph)
    # ``from bot.x import y`` names module bot.x; ``from bot import x`` names the package.
    sorter = graphlib.TopologicalSorter({m: {d for d in deps if d in modules and d != m} for m, deps in graph.items()})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle in bot/: {' -> '.join(cycle.args[1])}")
    print("\nbot/ from the bottom up:", ", ".join(order))


def test_core_and_plugins_import_no_sdk_and_no_llama_cpp() -> None:
    offenders = []
    for path in python_files("bot", "plugins"):
        bad = {top(name) for name in imported_modules(path)} & (set(SDKS) | {"llama_cpp"})
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert not offenders


def test_each_sdk_is_imported_only_by_its_connector() -> None:
    offenders = []
    for path in python_files("connectors", "engine"):
        relative = path.relative_to(ROOT)
        for module in {top(name) for name in imported_modules(path)} & set(SDKS):
            if relative.parts[:2] != ("connectors", SDKS[module]):
                offenders.append(f"{relative}: {module}")
    assert not offenders


def test_only_the_local_engine_imports_llama_cpp() -> None:
    users = [
        str(path.relative_to(ROOT))
        for path in python_files("connectors", "engine")
        if "llama_cpp" in {top(name) for name in imported_modules(path)}
    ]
    assert users == ["engine/llama.py"]


def test_the_checker_sees_lazy_relative_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from engine.local import LocalEngine\n"
        "def f():\n    import connectors.slack\n"
        "from .chat import ChatService\n"
    )
    assert set(parse_imports(source, "bot")) == {"typing", "engine.local", "connectors.slack", "bot.chat"}
