"""Log lines: text or JSON, tagged with the reply they concern, and never a secret."""

from __future__ import annotations

import io
import json
import logging

from bot.logs import MASK, RedactingFormatter, RedactingJsonFormatter, ReplyContext, reply_context, secrets_of
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


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(ReplyContext())
    logger = logging.getLogger(f"parley.test.{id(out)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_json_lines_parse_carry_the_reply_and_mask_secrets() -> None:
    logger, out = capture(RedactingJsonFormatter(secrets_of(settings())))
    logger.info("outside any reply")
    with reply_context(platform="telegram", message_id="42"), reply_context(conversation_id="c1"):
        logger.warning("GET https://api.telegram.org/bot%s/sendMessage failed", TELEGRAM)
        try:
            raise RuntimeError('quote " and xapp-slack-app')
        except RuntimeError:
            logger.exception("boom")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "WARNING", "ERROR"]
    assert "platform" not in lines[0]
    for line in lines[1:]:
        assert (line["platform"], line["conversation_id"], line["message_id"]) == ("telegram", "c1", "42")
    assert "bot***/sendMessage" in lines[1]["message"]
    for secret in secrets_of(settings()):
        assert secret not in out.getvalue()
    assert "RuntimeError" in lines[2]["exc_info"]


def test_text_lines_show_the_reply_in_brackets() -> None:
    logger, out = capture(RedactingFormatter([]))
    with reply_context(platform="slack", conversation_id="c9", message_id=None):
        logger.info("edited")
    assert out.getvalue().rstrip().endswith("edited [platform=slack conversation_id=c9]")
