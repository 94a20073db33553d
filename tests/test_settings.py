"""Settings from the environment and .env, and clear errors for wrong ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.bundled import bundled_model_path
from bot.errors import ConfigError
from bot.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_use_the_bundled_model_and_loopback_web() -> None:
    settings = load_settings()
    assert settings.engine.model_path == bundled_model_path()
    assert settings.engine.concurrency == 1
    assert (settings.web.host, settings.web.port) == ("127.0.0.1", 8080)
    assert settings.telegram.token is None


def test_nested_environment_variables_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_ENGINE__N_CTX", "4096")
    monkeypatch.setenv("PARLEY_WEB__API_KEYS", "k1, k2")
    monkeypatch.setenv("PARLEY_ADMINS", "telegram:1,discord:2")
    monkeypatch.setenv("PARLEY_SYSTEM_PROMPT", "Be brief.")
    settings = load_settings()
    assert settings.engine.n_ctx == 4096
    assert settings.web.api_keys == ["k1", "k2"]
    assert settings.admins == ["telegram:1", "discord:2"]
    assert settings.system_prompt == "Be brief."


def test_an_empty_kv_cache_dir_is_none_not_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Docker image sets one; ``-e PARLEY_ENGINE__KV_CACHE_DIR=`` turns it off."""
    monkeypatch.setenv("PARLEY_ENGINE__KV_CACHE_DIR", "")
    assert load_settings().engine.kv_cache_dir is None
    monkeypatch.setenv("PARLEY_ENGINE__KV_CACHE_DIR", "kv")
    assert load_settings().engine.kv_cache_dir == Path("kv")


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PARLEY_WEB__PORT=9999\nPARLEY_DB_PATH=data/x.db\n")
    settings = load_settings()
    assert settings.web.port == 9999
    assert settings.db_path == Path("data/x.db")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PARLEY_ENGINE__N_CTX", "lots", "PARLEY_ENGINE__N_CTX: Input should be a valid integer"),
        ("PARLEY_ENGINE__MODEL_PATH", "/nowhere/model.gguf", "PARLEY_ENGINE__MODEL_PATH: model_path '/nowhere"),
        (
            "PARLEY_ENGINE__MAX_TOKENS",
            "5000",
            "PARLEY_ENGINE__MAX_TOKENS (5000) must be smaller than PARLEY_ENGINE__N_CTX",
        ),
        ("PARLEY_WEB__PORT", "70000", "PARLEY_WEB__PORT: Input should be less than or equal to 65535"),
        ("PARLEY_WEB__HOST", "0.0.0.0", "set PARLEY_WEB__API_KEYS"),
    ],
)
def test_wrong_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in str(caught.value)


def test_cli_reports_a_wrong_setting_without_a_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env["PARLEY_ENGINE__THREADS"] = "zero"
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert result.returncode == 2
    assert "PARLEY_ENGINE__THREADS: Input should be a valid integer" in result.stderr
    assert "Traceback" not in result.stderr
