"""The Slack connector end to end: the real slack-bolt/slack_sdk against a fake Slack on loopback.

Each test runs the real app (real model, real SQLite store) and talks to it only the way Slack
would: Socket Mode envelopes or signed HTTP events in, Web API calls out.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bot.app import Parley
from bot.conversation import ConversationKey
from bot.errors import ConfigError, ConnectorError
from bot.settings import SlackSettings
from bot.store import Turn, TurnStatus
from connectors.slack.connector import MAX_MESSAGE_CHARS
from connectors.slack.mrkdwn import to_mrkdwn
from tests.conftest import MakeSettings
from tests.fakes.slack import FakeSlack, post_event

SECRET = "s3cret"
SLACK_MAX = 3500  # what each Slack message must stay under


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


def socket_settings(slack: FakeSlack) -> SlackSettings:
    return SlackSettings(bot_token=slack.bot_token, app_token=slack.app_token, api_url=slack.url)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def conversation(app: Parley, key: ConversationKey) -> str:
    """The conversation id of ``key``, created before the event arrives (the store's lookup creates)."""
    return await app.store.conversation(key)


async def answered(app: Parley, conversation_id: str, replies: int = 1, timeout: float = 240.0) -> list[Turn]:
    """Wait until the conversation has ``replies`` finished assistant turns; return all its turns.

    The timeout is a ceiling for a machine shared with other model runs, not a speed check.
    """
    turns: list[Turn] = []

    async def done() -> bool:
        nonlocal turns
        turns = await app.store.turns(conversation_id)
        finished = [t for t in turns if t.role == "assistant" and t.status is TurnStatus.COMPLETE]
        return len(finished) >= replies and all(t.status is not TurnStatus.STREAMING for t in turns)

    await eventually(done, timeout)
    return turns


def dm(text: str, ts: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel": "D1", "channel_type": "im", "user": "U1", "text": text, "ts": ts} | extra


def channel_message(text: str, ts: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel": "C1", "channel_type": "channel", "user": "U2", "text": text, "ts": ts} | extra


def assert_paced(slack: FakeSlack, channel: str) -> None:
    """About one call per second per channel: no two accepted chat calls closer than 0.9 s."""
    times = [c.at for c in slack.chat_calls(channel) if not c.rejected]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.9 for gap in gaps), gaps


async def test_dm_answered_with_paced_updates_and_final_text(make_settings: MakeSettings, slack: FakeSlack) -> None:
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False}, engine={"max_tokens": 256})
    async with Parley(settings) as app:
        assert app.status()["slack"] == "running"
        conversation_id = await conversation(app, ConversationKey("slack", "D1", None, "U1"))
        ack = await slack.send_event(
            dm("Write a long and detailed essay about the moon, with many sections.", "1700000001.000100"),
            event_id="EvDM1",
        )
        assert ack is not None
        assert ack["envelope_id"]

        turns = await answered(app, conversation_id)
        assert [t.role for t in turns] == ["user", "assistant"]
        assert turns[0].text == "Write a long and detailed essay about the moon, with many sections."
        reply = turns[1]

        posts = slack.posted("D1", any_thread=True)
        assert len(posts) == 1
        post = posts[0]
        assert post.thread_ts is None  # a top-level DM is answered at top level
        assert post.text == to_mrkdwn(reply.text)
        assert reply.message_ids == (post.ts,)
        assert len(slack.calls_to("chat.update", "D1")) >= 2  # streamed, not posted once
        assert_paced(slack, "D1")
        assert slack.rejected == []
        # the fake echoed the bot's own message as an event; it was not answered
        assert len(slack.calls_to("chat.postMessage")) == 1


async def test_mention_answered_once_in_a_thread_that_continues(make_settings: MakeSettings, slack: FakeSlack) -> None:
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False})
    async with Parley(settings) as app:
        ts = "1700000002.000200"
        text = "<@UBOT> Tell me a joke about cats"
        conversation_id = await conversation(app, ConversationKey("slack", "C1", ts, None))
        # Slack sends a mention twice (app_mention and message), and retries what was acked late.
        await slack.send_event(
            {"type": "app_mention", "channel": "C1", "user": "U2", "text": text, "ts": ts}, event_id="EvM1"
        )
        await slack.send_event(channel_message(text, ts), event_id="EvM2")
        await slack.send_event(
            {"type": "app_mention", "channel": "C1", "user": "U2", "text": text, "ts": ts},
            event_id="EvM1",
            retry_attempt=1,
        )
        # Not for the bot: chatter, edits, other bots, threads it is not in.
        await slack.send_event(channel_message("just chatting", "1700000003.000300"))
        await slack.send_event(channel_message("edited", "1700000004.000400", subtype="message_changed"))
        await slack.send_event(channel_message("beep", "1700000005.000500", bot_id="BOTHER", subtype="bot_message"))
        await slack.send_event(channel_message("unrelated", "1700000006.000600", thread_ts="1600000000.000001"))

        turns = await answered(app, conversation_id)
        assert turns[0].text == "Tell me a joke about cats"  # the mention is not shown to the model
        assert turns[0].role == "user"
        posts = slack.posted("C1", any_thread=True)
        assert [p.thread_ts for p in posts] == [ts]  # one reply, in a new thread under the mention
        assert posts[0].text == to_mrkdwn(turns[1].text)

        # A reply in that thread needs no mention and continues the same shared conversation.
        await slack.send_event(channel_message("Another one please", "1700000007.000700", thread_ts=ts, user="U3"))
        turns = await answered(app, conversation_id, replies=2)
        assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
        assert turns[2].text == "Another one please"
        posts = slack.posted("C1", any_thread=True)
        assert [p.thread_ts for p in posts] == [ts, ts]
        assert posts[1].text == to_mrkdwn(turns[3].text)
        assert len(slack.calls_to("chat.postMessage")) == 2
        assert_paced(slack, "C1")
        assert slack.rejected == []
        assert len(slack.acks) >= 9  # every envelope acknowledged, answered or not


async def test_rate_limited_update_is_waited_out(make_settings: MakeSettings, slack: FakeSlack) -> None:
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False}, engine={"max_tokens": 64})
    slack.rate_limit("chat.update", times=1, retry_after=2)
    async with Parley(settings) as app:
        conversation_id = await conversation(app, ConversationKey("slack", "D1", None, "U1"))
        await slack.send_event(dm("Write a short poem about the sea.", "1700000010.000100"))
        turns = await answered(app, conversation_id)

        rejected = slack.rejected
        assert [(c.method, c.status) for c in rejected] == [("chat.update", 429)]
        later = [c for c in slack.chat_calls("D1") if c.at > rejected[0].at]
        assert later, "the reply went on after the 429"
        assert later[0].at - rejected[0].at >= 1.9  # Retry-After was honoured for the channel
        (post,) = slack.posted("D1")
        assert post.text == to_mrkdwn(turns[1].text)


async def test_http_mode_verifies_signatures_and_answers_a_retry_once(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    slack_settings = SlackSettings(bot_token=slack.bot_token, signing_secret=SECRET, api_url=slack.url)
    async with Parley(make_settings(slack=slack_settings)) as app:
        assert app.web is not None
        url = f"http://127.0.0.1:{app.web.port}/slack/events"
        ts = "1700000020.000100"
        body = FakeSlack.event_body(dm("Hi there, who are you?", ts), "EvH1")
        conversation_id = await conversation(app, ConversationKey("slack", "D1", None, "U1"))

        challenge = {"type": "url_verification", "token": "t", "challenge": "c-123"}
        assert await post_event(url, challenge, SECRET) == (200, '{"challenge": "c-123"}')
        assert (await post_event(url, body, "wrong-secret"))[0] == 401
        assert (await post_event(url, body, SECRET, timestamp=int(time.time()) - 600))[0] == 401  # replayed
        assert (await post_event(url, body, SECRET))[0] == 200
        assert (await post_event(url, body, SECRET, retry_num=1))[0] == 200

        turns = await answered(app, conversation_id)
        assert [t.role for t in turns] == ["user", "assistant"]
        (post,) = slack.posted("D1")
        assert post.text == to_mrkdwn(turns[1].text)
        assert len(slack.calls_to("chat.postMessage")) == 1
        assert slack.rejected == []


@pytest.mark.timeout(600)
async def test_long_answer_rolls_over_into_new_messages_in_the_thread(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    settings = make_settings(
        slack=socket_settings(slack), web={"enabled": False}, engine={"max_tokens": 1000, "n_ctx": 2048}
    )
    async with Parley(settings) as app:
        ts = "1700000030.000100"
        prompt = "<@UBOT> Write a very long and detailed essay about the history of Rome, with many sections."
        conversation_id = await conversation(app, ConversationKey("slack", "C1", ts, None))
        await slack.send_event({"type": "app_mention", "channel": "C1", "user": "U2", "text": prompt, "ts": ts})
        turns = await answered(app, conversation_id, timeout=540)  # ~1000 tokens
        reply = turns[-1].text
        assert len(reply) > MAX_MESSAGE_CHARS, len(reply)

        posts = slack.posted("C1", ts)
        assert len(posts) >= 2
        assert all(len(p.text) <= SLACK_MAX for p in posts), [len(p.text) for p in posts]
        assert turns[-1].message_ids == tuple(p.ts for p in posts)
        # Every word of the reply arrived, in order, across the messages.
        assert _words("\n".join(p.text for p in posts)) == _words(to_mrkdwn(reply))
        assert_paced(slack, "C1")
        assert slack.rejected == []


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+", text)


@pytest.mark.parametrize(
    ("tokens", "failed_call"),
    [({"bot_token": "xoxb-wrong"}, "auth.test"), ({"app_token": "xapp-wrong"}, "apps.connections.open")],
)
async def test_bad_token_stops_start_up_cleanly(
    make_settings: MakeSettings, slack: FakeSlack, tokens: dict[str, str], failed_call: str
) -> None:
    bad = SlackSettings(**({"bot_token": slack.bot_token, "app_token": slack.app_token, "api_url": slack.url} | tokens))
    app = Parley(make_settings(slack=bad, web={"enabled": False}))
    with pytest.raises(ConnectorError, match=f"{failed_call} failed: invalid_auth"):
        await app.start()
    await app.stop()
    assert app.connectors[0].status() == "failed"
    assert slack.sockets == []  # nothing left connected


def test_http_mode_needs_the_web_server_and_a_signing_secret(make_settings: MakeSettings) -> None:
    with pytest.raises(ConfigError, match="PARLEY_WEB__ENABLED"):
        Parley(make_settings(slack=SlackSettings(bot_token="xoxb-x", signing_secret=SECRET), web={"enabled": False}))
    with pytest.raises(ConfigError, match="PARLEY_SLACK__SIGNING_SECRET"):
        Parley(make_settings(slack=SlackSettings(bot_token="xoxb-x")))


async def test_a_thread_answered_before_a_restart_still_needs_no_mention(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False}, engine={"max_tokens": 16})
    ts = "1700000010.000100"
    async with Parley(settings) as app:
        await slack.send_event(channel_message("<@UBOT> Say hi", ts))
        key = ConversationKey("slack", "C1", ts, None)
        await eventually(lambda: _has_reply(app, key))
    async with Parley(settings) as app:  # a new process would remember nothing in memory either
        await slack.send_event(channel_message("And again?", "1700000011.000100", thread_ts=ts, user="U3"))
        await slack.send_event(channel_message("not for the bot", "1700000012.000100", thread_ts="1600000000.000009"))
        conversation_id = await app.store.find_conversation(key)
        assert conversation_id is not None
        turns = await answered(app, conversation_id, replies=2)
        assert turns[2].text == "And again?"
    assert [p.thread_ts for p in slack.posted("C1", any_thread=True)] == [ts, ts]


async def _has_reply(app: Parley, key: ConversationKey) -> bool:
    found = await app.store.find_conversation(key)
    if found is None:
        return False
    turns = await app.store.turns(found)
    return len(turns) == 2 and turns[1].status != "streaming"
