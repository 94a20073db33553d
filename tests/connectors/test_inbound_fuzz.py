"""Generated platform events through each connector's inbound translation: nothing may raise.

Each platform's translation either skips an event (``None``) or gives the core a message or a
command whose text is valid Unicode without NUL, whatever the event carries: odd unicode (lone
surrogates, NUL, controls, combining marks), huge texts, entities whose offsets lie past the end,
fields of the wrong type where the platform's JSON could carry them.

- Telegram: generated update dicts through the real ``telegram.Update.de_json`` (PTB), then
  :func:`connectors.telegram.inbound.to_incoming`, :func:`~connectors.telegram.commands.parse_command`
  and :func:`~connectors.telegram.inbound.to_command_request`.
- Slack: generated event and slash-command dicts through :mod:`connectors.slack.inbound`.
- Discord: generated message payloads through discord.py's own ``Message`` construction (on the
  ``ConnectionState`` of a client that never connects), in DMs, a guild channel and a thread,
  then :func:`connectors.discord.inbound.to_incoming`; generated interaction data through
  :func:`~connectors.discord.inbound.find_command` and :func:`~connectors.discord.commands.option_values`.

``PARLEY_FUZZ_EXAMPLES`` sets the number of examples (150 by default); the ``heavy`` cases run ten
times as many (``make test-heavy`` sets 1000, so 10,000 each).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import discord
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telegram import Bot, Update

from bot.command import Command
from bot.conversation import Attachment, CommandRequest, IncomingMessage
from connectors.discord.commands import option_values
from connectors.discord.inbound import Participation, find_command
from connectors.discord.inbound import to_incoming as discord_incoming
from connectors.slack.inbound import BotIdentity
from connectors.slack.inbound import files_of as slack_files
from connectors.slack.inbound import to_command_request as slack_command
from connectors.slack.inbound import to_incoming as slack_incoming
from connectors.telegram.commands import parse_command
from connectors.telegram.inbound import files_of as telegram_files
from connectors.telegram.inbound import to_command_request as telegram_command
from connectors.telegram.inbound import to_incoming as telegram_incoming
from plugins.core import router as core_router

EXAMPLES = int(os.environ.get("PARLEY_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BOT_ID = 777000
BOT_NAME = "parley_test_bot"

characters = st.characters(categories=["L", "N", "P", "S", "Z", "Cc", "Cs", "Cf", "Mn", "Co"])
short_text = st.text(characters, max_size=40)
huge_text = st.builds(
    lambda piece, times: piece * times, st.text(characters, min_size=1, max_size=3), st.integers(2000, 9000)
)
odd_text = st.one_of(
    st.text(characters, max_size=300),
    huge_text,
    st.sampled_from(
        ["", "\x00", "\ud800", "\udfff x \ud83d", "@parley_test_bot", "/ask@parley_test_bot \x00 hi", "/", "/@"]
    ),
    st.builds(lambda a, b: f"{a}@{BOT_NAME}{b}", short_text, short_text),
    st.builds(lambda a, b: f"/{a}@{BOT_NAME} {b}", st.text("abcz_/@", max_size=12), short_text),
)
ids = st.integers(min_value=-(2**40), max_value=2**40)


def assert_clean(result: IncomingMessage | CommandRequest | None) -> None:
    """A skip, or a message whose texts the store and the tokenizer take."""
    if result is None:
        return
    texts = [result.text] if isinstance(result, IncomingMessage) else [result.args, result.name]
    names = [file.name for file in result.attachments] if isinstance(result, IncomingMessage) else []
    for text in [*texts, result.user_name, result.channel, result.user, *names]:
        assert "\x00" not in text
        text.encode("utf-8")  # no lone surrogate left


# Telegram


def tg_user() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"id": st.one_of(ids, st.just(BOT_ID)), "is_bot": st.booleans(), "first_name": short_text},
        optional={"username": st.one_of(short_text, st.just(BOT_NAME)), "last_name": short_text},
    )


def tg_chat() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"id": ids, "type": st.sampled_from(["private", "group", "supergroup", "channel", "sender"])},
        optional={"title": short_text, "is_forum": st.booleans(), "first_name": short_text},
    )


def tg_entities() -> st.SearchStrategy[list[dict[str, Any]]]:
    entity = st.fixed_dictionaries(
        {
            "type": st.sampled_from(["mention", "text_mention", "bot_command", "bold", "url", "hashtag", "new_kind"]),
            "offset": st.integers(-5, 10_000),
            "length": st.integers(-2, 10_000),
        },
        optional={"user": tg_user(), "url": short_text, "language": short_text},
    )
    return st.lists(entity, max_size=6)


def tg_message(depth: int = 1) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {
        "from": tg_user(),
        "text": odd_text,
        "caption": odd_text,
        "entities": tg_entities(),
        "caption_entities": tg_entities(),
        "message_thread_id": ids,
        "is_topic_message": st.booleans(),
        "sender_chat": tg_chat(),
        "forum_topic_created": st.just({"name": "topic", "icon_color": 7322096}),
        "document": st.fixed_dictionaries(
            {"file_id": short_text, "file_unique_id": short_text},
            optional={"file_name": odd_text, "mime_type": odd_text, "file_size": st.integers(0, 2**40)},
        ),
        "photo": st.lists(
            st.fixed_dictionaries(
                {
                    "file_id": short_text,
                    "file_unique_id": short_text,
                    "width": st.integers(0, 10_000),
                    "height": st.integers(0, 10_000),
                },
                optional={"file_size": st.integers(0, 2**40)},
            ),
            max_size=3,
        ),
    }
    if depth > 0:
        optional["reply_to_message"] = tg_message(depth - 1)
    return st.fixed_dictionaries(
        {"message_id": st.integers(1, 2**31), "date": st.integers(0, 2**31), "chat": tg_chat()}, optional=optional
    )


@cache
def telegram_bot() -> Bot:
    return Bot("777000:TEST-token")


@FUZZ
@given(message=tg_message(), is_admin=st.booleans())
def test_telegram_updates_translate_or_skip(message: dict[str, Any], is_admin: bool) -> None:
    update = Update.de_json({"update_id": 1, "message": message}, telegram_bot())
    assert update is not None
    assert update.message is not None
    assert_clean(telegram_incoming(update.message, BOT_ID, BOT_NAME))
    files = [Attachment(f.name, f.mime, f.size) for f in telegram_files(update.message, 1_000_000)]
    assert_clean(telegram_incoming(update.message, BOT_ID, BOT_NAME, files))
    typed = parse_command(update.message)
    if typed is not None:
        assert_clean(telegram_command(update.message, typed.name, typed.args, is_admin=is_admin))
    assert_clean(telegram_command(update.message, "ask", "", is_admin=is_admin))


# Slack

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), odd_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=6,
)
slack_ids = st.one_of(st.sampled_from(["U1", "UBOT", "D1", "C1", "G1", ""]), short_text, json_values)
slack_ts = st.one_of(st.sampled_from(["1700000000.000100", "1700000000.000200"]), short_text, json_values)


def slack_event() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": st.sampled_from(["message", "app_mention", "reaction_added", 5])},
        optional={
            "channel": slack_ids,
            "user": slack_ids,
            "ts": slack_ts,
            "thread_ts": slack_ts,
            "text": st.one_of(odd_text, st.builds(lambda t: f"<@UBOT> {t}", odd_text), json_values),
            "channel_type": st.one_of(st.sampled_from(["im", "mpim", "channel", "group"]), json_values),
            "subtype": st.one_of(st.sampled_from(["thread_broadcast", "file_share", "message_changed"]), json_values),
            "bot_id": json_values,
            "parent_user_id": slack_ids,
            "user_profile": json_values,
            "files": st.one_of(
                json_values,
                st.lists(
                    st.dictionaries(
                        st.sampled_from(["id", "name", "title", "mimetype", "size", "mode", "url_private_download"]),
                        json_values,
                        max_size=6,
                    ),
                    max_size=3,
                ),
            ),
        },
    )


@FUZZ
@given(event=slack_event(), mentioned=st.booleans(), known_thread=st.booleans())
def test_slack_events_translate_or_skip(event: dict[str, Any], mentioned: bool, known_thread: bool) -> None:
    from bot.bounded import BoundedSet

    threads: BoundedSet[tuple[str, str]] = BoundedSet(16)
    if known_thread and isinstance(event.get("channel"), str) and isinstance(event.get("thread_ts"), str):
        threads.add((event["channel"], event["thread_ts"]))
    files = [Attachment(f.name, f.mime, f.size) for f in slack_files(event)]
    assert all(isinstance(f.size, int | None) and isinstance(f.url, str) for f in slack_files(event))
    assert_clean(slack_incoming(event, BotIdentity("UBOT", "BBOT"), threads, mentioned=mentioned, attachments=files))


@FUZZ
@given(
    payload=st.fixed_dictionaries(
        {},
        optional={
            "user_id": slack_ids,
            "channel_id": slack_ids,
            "command": st.one_of(st.sampled_from(["/parley-ask", "/ask", "/", ""]), odd_text, json_values),
            "text": st.one_of(odd_text, json_values),
            "user_name": st.one_of(odd_text, json_values),
            "response_url": st.one_of(odd_text, json_values),
        },
    ),
    prefix=st.sampled_from(["", "parley-", "p"]),
)
def test_slack_slash_commands_translate_or_skip(payload: dict[str, Any], prefix: str) -> None:
    assert_clean(slack_command(payload, prefix=prefix))


# Discord


@cache
def discord_world() -> tuple[Any, discord.ClientUser, discord.Guild]:
    """A client's connection state (it never connects), the bot's user and one guild."""
    client = discord.Client(intents=discord.Intents.none())
    state = client._connection
    me = discord.ClientUser(state=state, data=dc_user_data("10", "parley", bot=True))  # type: ignore[arg-type]
    state.user = me
    guild_data = {
        "id": "500",
        "name": "guild",
        "owner_id": "1",
        "roles": [{"id": "500", "name": "@everyone", "permissions": "68608", "position": 0, "color": 0}],
        "channels": [{"id": "600", "name": "general", "type": 0, "position": 0, "permission_overwrites": []}],
        "threads": [],
        "members": [],
        "emojis": [],
        "stickers": [],
        "features": [],
    }
    guild = discord.Guild(data=guild_data, state=state)  # type: ignore[arg-type]
    state._add_guild(guild)
    return state, me, guild


def dc_user_data(user_id: str, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {"id": user_id, "username": name, "discriminator": "0", "avatar": None, "global_name": name, "bot": bot}


dc_ids = st.one_of(st.sampled_from(["10", "20", "30"]), st.integers(1, 2**63 - 1).map(str))
dc_user = st.builds(dc_user_data, dc_ids, short_text, bot=st.booleans())


def dc_message() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "id": dc_ids,
            "author": dc_user,
            "content": st.one_of(odd_text, st.builds(lambda t: f"<@10> {t} <@!10>", odd_text)),
            "timestamp": st.just("2025-01-01T00:00:00+00:00"),
            "edited_timestamp": st.none(),
            "tts": st.booleans(),
            "mention_everyone": st.booleans(),
            "mentions": st.lists(dc_user, max_size=3),
            "mention_roles": st.just([]),
            "attachments": st.just([]),
            "embeds": st.just([]),
            "pinned": st.booleans(),
            "type": st.sampled_from([0, 19]),
        },
        optional={"message_reference": st.fixed_dictionaries({"message_id": dc_ids, "channel_id": dc_ids})},
    )


@FUZZ
@given(data=dc_message(), where=st.sampled_from(["dm", "channel", "thread"]), referenced=st.booleans())
def test_discord_messages_translate_or_skip(data: dict[str, Any], where: str, referenced: bool) -> None:
    state, me, guild = discord_world()
    channel: Any
    if where == "dm":
        channel = discord.DMChannel(me=me, state=state, data={"id": "700", "type": 1, "recipients": [data["author"]]})
        data = data | {"channel_id": "700"}
    elif where == "channel":
        channel = guild.get_channel(600)
        data = data | {"channel_id": "600", "guild_id": "500"}
    else:
        thread_data = {
            "id": "800",
            "guild_id": "500",
            "parent_id": "600",
            "owner_id": "10" if referenced else "20",
            "name": "a thread",
            "type": 11,
            "member_count": 2,
            "message_count": 0,
            "rate_limit_per_user": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": data["timestamp"],
                "locked": False,
            },
        }
        channel = discord.Thread(guild=guild, state=state, data=thread_data)
        data = data | {"channel_id": "800", "guild_id": "500"}
    if referenced and "message_reference" in data:
        data = data | {
            "referenced_message": dict(data, id=data["message_reference"]["message_id"], author=dc_user_data("10", "p"))
        }
        data["referenced_message"].pop("message_reference")
    message = discord.Message(state=state, channel=channel, data=data)
    assert_clean(discord_incoming(message, me, Participation()))


COMMANDS: list[Command] = list(core_router.commands)


@FUZZ
@given(
    data=st.fixed_dictionaries(
        {},
        optional={
            "name": st.one_of(st.sampled_from(["ask", "stop"]), odd_text, json_values),
            "options": st.one_of(
                st.lists(
                    st.fixed_dictionaries({}, optional={"name": json_values, "value": json_values, "type": json_values})
                ),
                json_values,
            ),
        },
    )
)
def test_discord_interaction_data_translates(data: dict[str, Any]) -> None:
    command = find_command(COMMANDS, data)
    values = option_values(command, data)
    assert all(isinstance(name, str) for name in values)


# ``make test-heavy``: the same checks on many more inputs.

MANY = settings(max_examples=EXAMPLES * 10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.heavy
@MANY
@given(message=tg_message(), is_admin=st.booleans())
def test_many_telegram_updates(message: dict[str, Any], is_admin: bool) -> None:
    test_telegram_updates_translate_or_skip.hypothesis.inner_test(message, is_admin)  # type: ignore[attr-defined]


@pytest.mark.heavy
@MANY
@given(event=slack_event(), mentioned=st.booleans(), known_thread=st.booleans())
def test_many_slack_events(event: dict[str, Any], mentioned: bool, known_thread: bool) -> None:
    test_slack_events_translate_or_skip.hypothesis.inner_test(event, mentioned, known_thread)  # type: ignore[attr-defined]


@pytest.mark.heavy
@MANY
@given(data=dc_message(), where=st.sampled_from(["dm", "channel", "thread"]), referenced=st.booleans())
def test_many_discord_messages(data: dict[str, Any], where: str, referenced: bool) -> None:
    test_discord_messages_translate_or_skip.hypothesis.inner_test(data, where, referenced)  # type: ignore[attr-defined]
