"""Layering rules from STYLE.md that a test can check.

The core (bot/) and plugins/ import no platform SDK and no llama_cpp; only connectors/<platform>
imports its SDK; only engine/local.py imports llama_cpp. Lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SDKS = {"discord": "discord", "telegram": "telegram", "slack_bolt": "slack", "slack_sdk": "slack"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def python_files(*parts: str) -> list[Path]:
    return sorted((ROOT.joinpath(*parts)).rglob("*.py"))


def test_core_and_plugins_import_no_sdk_and_no_llama_cpp() -> None:
    offenders = []
    for path in python_files("bot") + python_files("plugins"):
        bad = imports(path) & (set(SDKS) | {"llama_cpp"})
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert not offenders


def test_each_sdk_is_imported_only_by_its_connector() -> None:
    offenders = []
    for path in python_files("connectors") + python_files("engine"):
        relative = path.relative_to(ROOT)
        for module in imports(path) & set(SDKS):
            if relative.parts[:2] != ("connectors", SDKS[module]):
                offenders.append(f"{relative}: {module}")
    assert not offenders


def test_only_the_local_engine_imports_llama_cpp() -> None:
    users = [
        str(path.relative_to(ROOT))
        for path in python_files("connectors") + python_files("engine")
        if "llama_cpp" in imports(path)
    ]
    assert users == ["engine/local.py"]
