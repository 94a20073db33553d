"""Shared fixtures: settings for a test app, isolated from the machine's env; the model tests' group.

The suite runs on several pytest-xdist workers (most tests wait on platform pacing, not the CPU).
Tests that run the real model (the modules in :data:`MODEL_MODULES`, and elsewhere every test with
``real_model`` in its name) are marked ``model`` and all go to one worker, one after the other, so
that two model processes never share the cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.settings import EngineSettings, Settings, WebSettings

MODEL_MODULES = frozenset(
    {
        "test_engine_local.py",
        "test_engine_scheduler.py",
        "test_sampler.py",
        "test_kv_cache.py",
        "test_engine_openai.py",
        "test_lifecycle.py",
        "test_crash.py",
        "test_logs_run.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in MODEL_MODULES or "real_model" in item.name:
            item.add_marker(pytest.mark.model)
        if item.get_closest_marker("model") is not None:
            item.add_marker(pytest.mark.xdist_group("model"))


# Deterministic and short: greedy decoding, fixed seed.
TEST_ENGINE: dict[str, Any] = {"temperature": 0.0, "seed": 42, "max_tokens": 48, "n_ctx": 2048, "threads": 2}


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No PARLEY_* variable or .env file of the machine leaks into a test."""
    for name in list(os.environ):
        if name.startswith("PARLEY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    """Settings for a test app: a fresh SQLite file, the bundled model, web on an ephemeral port.

    ``engine=`` and ``web=`` take dicts merged over the test defaults; other keywords go to Settings.
    """

    def make(**overrides: Any) -> Settings:
        engine = TEST_ENGINE | overrides.pop("engine", {})
        web = {"port": 0} | overrides.pop("web", {})
        overrides.setdefault("db_path", tmp_path / "parley.db")
        return Settings(engine=EngineSettings(**engine), web=WebSettings(**web), **overrides)

    return make
