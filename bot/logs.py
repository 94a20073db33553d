"""Logging set-up: one format for every library's lines, with every configured secret masked.

Libraries log what they see: with a Telegram token set, ``httpx`` logs each request URL at INFO,
and that URL holds ``bot<TOKEN>``. :class:`RedactingFormatter` masks every secret of the settings
(tokens, API keys, signing secrets) in the whole formatted line, traceback included, whichever
logger wrote it; ``httpx``'s request lines are also lowered to WARNING as noise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic import BaseModel, SecretStr

from bot.settings import Settings

MASK = "***"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MIN_SECRET = 6
"""Shorter values are not masked: they would mask ordinary words."""


def secrets_of(model: BaseModel) -> list[str]:
    """Every secret value in ``model`` and its nested models: ``SecretStr`` fields and API keys."""
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            found.extend(secrets_of(value))
        elif name == "api_keys":
            found.extend(str(key) for key in value)
    return found


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then replaces each secret (longest first) with ``***``."""

    def __init__(self, secrets: Iterable[str], fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


def configure_logging(settings: Settings | None = None) -> None:
    """Log to stderr at the settings' level with every secret of ``settings`` masked."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    formatter = RedactingFormatter(secrets_of(settings) if settings is not None else ())
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(settings.log_level if settings is not None else logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
