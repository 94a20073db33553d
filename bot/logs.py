"""Logging set-up: text or JSON lines for every library, the reply a line is about, no secrets.

- ``PARLEY_LOG_FORMAT=json`` writes one JSON object per line (python-json-logger); ``text`` (the
  default) writes ``time level logger: message``.
- A line written while a reply is handled carries its ``platform``, ``conversation_id`` and
  ``message_id`` (:func:`reply_context`, kept in a context variable, so every line of that task
  has them whichever module logs it); text lines show them in brackets at the end.
- Libraries log what they see: with a Telegram token set, ``httpx`` logs each request URL at
  INFO, and that URL holds ``bot<TOKEN>``. Every secret of the settings (tokens, API keys, signing
  secrets) is masked in the whole formatted line, traceback included, in either format and
  whichever logger wrote it; ``httpx``'s request lines are also lowered to WARNING as noise.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, SecretStr
from pythonjsonlogger.json import JsonFormatter

from bot.settings import Settings

MASK = "***"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(reply)s"
JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
MIN_SECRET = 6
"""Shorter values are not masked: they would mask ordinary words."""
CONTEXT_FIELDS = ("platform", "conversation_id", "message_id")

_reply: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("parley_reply", default={})  # noqa: B039 - never mutated


@contextlib.contextmanager
def reply_context(**fields: str | None) -> Iterator[None]:
    """Tag every log line written inside (in this task and the tasks it starts) with ``fields``."""
    token = _reply.set(_reply.get() | {name: value for name, value in fields.items() if value})
    try:
        yield
    finally:
        _reply.reset(token)


class ReplyContext(logging.Filter):
    """Copies the current reply's fields onto each record (``record.reply`` for the text format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _reply.get()
        for name in CONTEXT_FIELDS:
            if name in fields and not hasattr(record, name):
                setattr(record, name, fields[name])
        shown = " ".join(f"{name}={fields[name]}" for name in CONTEXT_FIELDS if name in fields)
        record.reply = f" [{shown}]" if shown else ""
        return True


def secrets_of(model: BaseModel) -> list[str]:
    """Every secret value in ``model`` and its nested models (in dicts too): ``SecretStr`` fields and API keys."""
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            found.extend(secrets_of(value))
        elif isinstance(value, dict):  # PARLEY_MODELS: one engine settings model per name
            for item in value.values():
                if isinstance(item, BaseModel):
                    found.extend(secrets_of(item))
        elif name == "api_keys":
            found.extend(str(key) for key in value)
    return found


class _Masking:
    def __init__(self, secrets: Iterable[str]) -> None:
        kept = {s for s in secrets if len(s) >= MIN_SECRET}
        # Also as they appear inside a JSON string, escaped.
        kept |= {json.dumps(s)[1:-1] for s in kept}
        self.secrets = sorted(kept, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


class RedactingFormatter(logging.Formatter):
    """Formats as text, then replaces each secret (longest first) with ``***``."""

    def __init__(self, secrets: Iterable[str], fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self._masking = _Masking(secrets)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "reply"):
            record.reply = ""
        return self._masking.mask(super().format(record))


class RedactingJsonFormatter(JsonFormatter):
    """One JSON object per line, secrets masked in the serialised line."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(JSON_FORMAT, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
        self._masking = _Masking(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._masking.mask(super().format(record))

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.pop("reply", None)  # the text format's suffix; JSON has the fields themselves


def configure_logging(settings: Settings | None = None) -> None:
    """Log to stderr in the settings' format and level, with every secret of ``settings`` masked."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    secrets = secrets_of(settings) if settings is not None else []
    use_json = settings is not None and settings.log_format == "json"
    formatter = RedactingJsonFormatter(secrets) if use_json else RedactingFormatter(secrets)
    for handler in root.handlers:
        handler.setFormatter(formatter)
        if not any(isinstance(f, ReplyContext) for f in handler.filters):
            handler.addFilter(ReplyContext())
    root.setLevel(settings.log_level if settings is not None else logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
