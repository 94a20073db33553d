"""Secrets never reach a log line, whichever library writes it."""

from __future__ import annotations

import io
import logging

from bot.logs import MASK, RedactingFormatter, secrets_of
from bot.settings import Settings

TELEGRAM = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def settings() -> Settings:
    return Settings(
        telegram={"token": TELEGRAM},
        discord={"token": "discord-token-abcdef"},
        slack={"bot_token": "xoxb-slack-bot", "app_token": "xapp-slack-app", "signing_secret": "signing-secret"},
        web={"api_keys": ["first-api-key", "second-api-key"]},
        engine={"api_key": "engine-api-key"},
    )


def test_every_secret_of_the_settings_is_found() -> None:
    assert set(secrets_of(settings())) == {
        TELEGRAM,
        "discord-token-abcdef",
        "xoxb-slack-bot",
        "xapp-slack-app",
        "signing-secret",
        "first-api-key",
        "second-api-key",
        "engine-api-key",
    }


def test_secrets_are_masked_in_messages_arguments_and_tracebacks() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingFormatter(secrets_of(settings())))
    logger = logging.getLogger("httpx.test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("HTTP Request: POST https://api.telegram.org/bot%s/getUpdates", TELEGRAM)
        try:
            raise RuntimeError(f"auth failed with xoxb-slack-bot and {TELEGRAM}")
        except RuntimeError:
            logger.exception("call failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    for secret in secrets_of(settings()):
        assert secret not in text
    assert f"/bot{MASK}/getUpdates" in text
    assert "RuntimeError: auth failed with ***" in text
