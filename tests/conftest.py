"""Shared fixtures: settings for a real app on the bundled model, isolated from the machine's env."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.settings import EngineSettings, Settings, WebSettings

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
