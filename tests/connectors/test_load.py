"""Load: many users on Telegram, Discord and Slack at once, in bursts, through the real SDKs and the
strict fakes (Telegram's 1/s per chat, 20 per 60 s per group and 30/s per bot; Discord's 5 writes
per 5 s per channel; Slack's 1/s per channel, all in sliding windows).

Judged by outcomes, never by timings: every message is answered exactly once (one reply message
per question, showing the answer to that question), the fakes refused no write (no 429 at all),
and no error note ("⚠️") is shown anywhere. The scripted engine streams short answers with a
small delay per word, so that replies are edited while they stream.

The bounded case runs in ``make test``; ``make test-heavy`` runs the large one (``-m heavy``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from bot.engine import ChatMessage
from bot.settings import DiscordSettings, SlackSettings, TelegramSettings
from connectors.discord import endpoints
from tests.conftest import MakeSettings
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import BOT_USERNAME, TOKEN, Chat, FakeTelegram
from tests.support import ScriptedEngine, make_app, wait_until

QUESTION = re.compile(r"q-[a-z]+-\d+-\d+")
WARNING = "⚠️"


def answer_to(messages: Sequence[ChatMessage]) -> str:
    """A short answer naming the question it answers (speaker prefixes and all around it ignored)."""
    last = next(m.content for m in reversed(messages) if m.role == "user")
    found = QUESTION.search(last)
    return f"Here is the answer to {found.group() if found else 'nothing'}, as asked."


def expected(question: str) -> str:
    return f"Here is the answer to {question}, as asked."


@dataclass(frozen=True)
class Load:
    telegram_private: int
    telegram_groups: int
    telegram_group_users: int
    """Users per group, each mentioning the bot."""
    discord_dms: int
    discord_channel_users: int
    slack_dms: int
    slack_channel_users: int
    messages: int
    """Messages each user sends, all at once."""

    @property
    def total(self) -> int:
        users = (
            self.telegram_private
            + self.telegram_groups * self.telegram_group_users
            + self.discord_dms
            + self.discord_channel_users
            + self.slack_dms
            + self.slack_channel_users
        )
        return users * self.messages


BOUNDED = Load(
    telegram_private=5,
    telegram_groups=1,
    telegram_group_users=2,
    discord_dms=5,
    discord_channel_users=1,
    slack_dms=5,
    slack_channel_users=1,
    messages=2,
)
HEAVY = Load(
    telegram_private=24,
    telegram_groups=4,
    telegram_group_users=2,
    discord_dms=8,
    discord_channel_users=2,
    slack_dms=8,
    slack_channel_users=2,
    messages=3,
)


async def run_load(make_settings: MakeSettings, load: Load, timeout: float) -> None:
    telegram = FakeTelegram()
    slack = FakeSlack()
    discord = FakeDiscord()
    previous = endpoints.current()
    await discord.start()
    try:
        async with telegram, slack:
            settings = make_settings(
                telegram=TelegramSettings(token=TOKEN, base_url=telegram.url, poll_timeout=1, group_edit_interval=1.0),
                discord=DiscordSettings(
                    token=discord.token,
                    api_base=discord.api_base,
                    gateway_url=discord.gateway_url,
                    guild_ready_timeout=0.2,
                ),
                slack=SlackSettings(bot_token=slack.bot_token, app_token=slack.app_token, api_url=slack.url),
                web={"enabled": False},
                engine={"max_tokens": 64},
            )
            engine = ScriptedEngine(answer_to, delay=0.03)
            async with make_app(settings, engine) as app:
                status = app.status()
                assert [status[name] for name in ("telegram", "discord", "slack")] == ["running"] * 3, status
                questions = await burst(load, telegram, discord, slack)
                assert len(questions) == load.total
                await wait_until(
                    lambda: all_answered(questions, telegram, discord, slack),
                    timeout,
                    what="every question answered",
                )
                await asyncio.wait_for(app.chat.join(), timeout)
                assert len(engine.prompts) == load.total, "each question reached the model once"
            check(questions, telegram, discord, slack)
    finally:
        await discord.stop()
        endpoints.restore(previous)


@dataclass(frozen=True)
class Question:
    platform: str
    channel: str
    message_id: str
    id: str


async def burst(load: Load, telegram: FakeTelegram, discord: FakeDiscord, slack: FakeSlack) -> list[Question]:
    """Every user sends all their messages at once, on every platform together."""
    questions: list[Question] = []
    sends: list[Any] = []
    for n in range(load.messages):
        for user in range(load.telegram_private):
            qid = f"q-tg-{user}-{n}"
            chat = Chat(id=5000 + user, type="private")
            message_id = telegram.push(chat, f"Tell me about {qid} please", user_id=5000 + user, first_name=f"u{user}")
            questions.append(Question("telegram", str(chat.id), str(message_id), qid))
        for group in range(load.telegram_groups):
            chat = Chat(id=-100_500 - group, type="supergroup", title=f"group {group}")
            for member in range(load.telegram_group_users):
                user = 7000 + group * 100 + member
                qid = f"q-tgg-{user}-{n}"
                text = f"@{BOT_USERNAME} what about {qid} then"
                message_id = telegram.push(chat, text, user_id=user, first_name=f"m{user}")
                questions.append(Question("telegram", str(chat.id), str(message_id), qid))
        for user in range(load.discord_dms):
            qid = f"q-dc-{user}-{n}"
            sends.append((f"discord-dm-{user}", qid, "dm", str(2000 + user)))
        for user in range(load.discord_channel_users):
            qid = f"q-dcc-{user}-{n}"
            sends.append((f"discord-ch-{user}", qid, "channel", str(3000 + user)))
        for user in range(load.slack_dms):
            qid = f"q-sl-{user}-{n}"
            channel = f"D{100 + user}"
            event = {"type": "message", "channel": channel, "channel_type": "im", "user": f"U{100 + user}"}
            sends.append(("slack", qid, event, f"Tell me about {qid} please"))
        for user in range(load.slack_channel_users):
            qid = f"q-slc-{user}-{n}"
            event = {"type": "app_mention", "channel": "C1", "user": f"U{300 + user}"}
            sends.append(("slack", qid, event, f"<@{slack.bot_user}> what about {qid} then"))

    async def send(item: tuple[Any, ...], number: int) -> Question:
        kind, qid = item[0], item[1]
        if kind == "slack":
            event = dict(item[2]) | {"text": item[3], "ts": f"1700000000.{number:06d}"}
            await slack.send_event(event)
            return Question("slack", event["channel"], event["ts"], qid)
        where, user = item[2], item[3]
        message_id = await discord.user_says(
            f"Tell me about {qid} please", user=(user, f"user{user}"), where=where, mention=where == "channel"
        )
        channel = str(9_000_000 + int(user)) if where == "dm" else discord.channel_id
        return Question("discord", channel, message_id, qid)

    questions += await asyncio.gather(*(send(item, number) for number, item in enumerate(sends)))
    return questions


def telegram_replies(telegram: FakeTelegram, question: Question) -> list[str]:
    return [m.text for m in telegram.replies_to(int(question.channel), int(question.message_id))]


def discord_replies(discord: FakeDiscord, question: Question) -> list[str]:
    return [
        str(m["content"])
        for m in discord.messages.values()
        if m["author"]["id"] == discord.bot["id"]
        and str((m.get("message_reference") or {}).get("message_id")) == question.message_id
    ]


def slack_replies(slack: FakeSlack, question: Question) -> list[str]:
    # DMs are answered in the DM, mentions in a thread under them; either way the text names the question.
    return [p.text for p in slack.posted(question.channel, any_thread=True) if question.id in p.text]


def replies(question: Question, telegram: FakeTelegram, discord: FakeDiscord, slack: FakeSlack) -> list[str]:
    if question.platform == "telegram":
        return telegram_replies(telegram, question)
    if question.platform == "discord":
        return discord_replies(discord, question)
    return slack_replies(slack, question)


def all_answered(questions: list[Question], telegram: FakeTelegram, discord: FakeDiscord, slack: FakeSlack) -> bool:
    return all(expected(q.id) in replies(q, telegram, discord, slack) for q in questions)


def check(questions: list[Question], telegram: FakeTelegram, discord: FakeDiscord, slack: FakeSlack) -> None:
    # Exactly once: one reply message per question, showing that question's answer.
    for question in questions:
        assert replies(question, telegram, discord, slack) == [expected(question.id)], question
    bot_messages = [
        *(m.text for m in telegram.messages.values()),
        *(str(m["content"]) for m in discord.messages.values() if m["author"]["id"] == discord.bot["id"]),
        *(p.text for p in slack.messages.values()),
    ]
    assert len(bot_messages) == len(questions), "no message posted twice, no stray message"
    assert [text for text in bot_messages if WARNING in text] == []
    # No write refused: not one 429 (or any other refusal) from any platform.
    assert telegram.refused() == []
    assert [c for c in telegram.calls if c.status != 200] == []
    assert discord.rejected == []
    assert [c for c in discord.calls if c.status >= 400] == []
    assert slack.rejected == []


async def test_many_users_on_three_platforms_in_bursts(make_settings: MakeSettings) -> None:
    await run_load(make_settings, BOUNDED, timeout=60)


@pytest.mark.heavy
async def test_heavy_load_on_three_platforms(make_settings: MakeSettings) -> None:
    await run_load(make_settings, HEAVY, timeout=600)
