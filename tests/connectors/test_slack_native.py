"""Slack's native streaming: ``chat.startStream``/``appendStream``/``stopStream`` wherever there is
a thread, ``chat.update`` edits elsewhere and after a refusal.

The real slack-bolt/slack_sdk against the fake Slack, which takes the stream methods' documented
parameters and limits (recipient fields in channels, 12,000 characters a call) and can refuse them.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from bot.conversation import ConversationKey, Destination
from bot.settings import Settings, SlackSettings
from bot.store import Turn, TurnStatus
from connectors.slack.connector import SlackConnector
from connectors.slack.render import to_mrkdwn
from tests.conftest import MakeSettings
from tests.connectors.conftest import essay
from tests.fakes.slack import FakeSlack, Posted
from tests.support import ScriptedEngine, make_app, stored_turns, wait_reply, wait_until

START, APPEND, STOP = "chat.startStream", "chat.appendStream", "chat.stopStream"


@pytest.fixture
def slack(fake_slack: FakeSlack) -> FakeSlack:
    return fake_slack


def settings_for(make_settings: MakeSettings, slack: FakeSlack, max_tokens: int = 80, **extra: Any) -> Settings:
    slack_settings = SlackSettings(bot_token=slack.bot_token, app_token=slack.app_token, api_url=slack.url, **extra)
    return make_settings(slack=slack_settings, web={"enabled": False}, engine={"max_tokens": max_tokens})


def slow(words: int, delay: float = 0.05) -> ScriptedEngine:
    return ScriptedEngine(lambda _: essay(words), delay=delay)


def mention(ts: str, text: str = "<@UBOT> tell me a story", **extra: Any) -> dict[str, Any]:
    return {"type": "app_mention", "channel": "C1", "user": "U2", "text": text, "ts": ts} | extra


async def reply_in(store: Any, key: ConversationKey, replies: int = 1) -> Turn:
    turn = await wait_reply(store, key, replies)
    assert turn.status is TurnStatus.COMPLETE, turn
    return turn


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+", text)


def assert_paced(slack: FakeSlack, channel: str) -> None:
    """Posts, updates, starts and stops about one a second per channel; appends apart (Tier 4)."""
    times = [c.at for c in slack.chat_calls(channel) if not c.rejected and c.method != APPEND]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.9 for gap in gaps), gaps


async def test_a_channel_mention_streams_through_start_append_stop_with_its_recipient(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    ts = "1700000100.000100"
    key = ConversationKey("slack", "C1", ts, None)
    async with make_app(settings_for(make_settings, slack), slow(60)) as app:
        await slack.send_event(mention(ts))
        turn = await reply_in(app.store, key)
    assert turn.text == essay(60)
    (post,) = slack.posted("C1", ts)
    assert post.markdown
    assert not post.streaming
    assert post.text == turn.text  # the Markdown, complete, as stored
    assert post.recipient == ("U2", "T1")
    assert turn.message_ids == (post.ts,)
    methods = [c.method for c in slack.chat_calls("C1")]
    assert methods[0] == START
    assert methods[-1] == STOP
    assert methods.count(APPEND) >= 3
    assert set(methods) == {START, APPEND, STOP}  # no chat.postMessage, no chat.update
    start = slack.calls_to(START)[0]
    assert start.params["thread_ts"] == ts
    assert all(len(str(c.params.get("markdown_text", ""))) <= 12000 for c in slack.chat_calls("C1"))
    assert_paced(slack, "C1")
    assert slack.rejected == []


async def test_refused_streams_complete_with_chat_update_and_are_not_tried_again(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    slack.refuse_streams = "unknown_method"  # a workspace without the feature
    first, second = "1700000200.000100", "1700000201.000100"
    async with make_app(settings_for(make_settings, slack), slow(40)) as app:
        await slack.send_event(mention(first))
        one = await reply_in(app.store, ConversationKey("slack", "C1", first, None))
        await slack.send_event(mention(second))
        two = await reply_in(app.store, ConversationKey("slack", "C1", second, None))
    for ts, turn in ((first, one), (second, two)):
        (post,) = slack.posted("C1", ts)
        assert not post.markdown
        assert post.text == to_mrkdwn(turn.text) == to_mrkdwn(essay(40))
        assert len(post.history) >= 2  # streamed by chat.update
    assert [(c.method, c.error) for c in slack.rejected] == [(START, "unknown_method")]  # remembered
    assert_paced(slack, "C1")


async def test_a_stream_refused_mid_reply_goes_on_with_chat_update_from_where_it_was(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    ts = "1700000300.000100"
    key = ConversationKey("slack", "C1", ts, None)
    async with make_app(settings_for(make_settings, slack), slow(60)) as app:
        await slack.send_event(mention(ts))
        await wait_until(lambda: len(slack.calls_to(APPEND)) >= 2, what="a few appends")
        slack.fail(APPEND, "messaging_processing_failed")
        turn = await reply_in(app.store, key)
        connector = app.connectors[0]
        assert isinstance(connector, SlackConnector)
        assert connector.native_stream(Destination("C1", thread=ts, user="U2")) is None  # remembered
        assert connector.native_stream(Destination("C9", thread=ts, user="U2")) is not None  # for C1 only
    (post,) = slack.posted("C1", ts)
    assert not post.streaming
    assert post.text == to_mrkdwn(turn.text) == to_mrkdwn(essay(60))
    methods = [c.method for c in slack.chat_calls("C1") if not c.rejected]
    assert methods[0] == START
    assert STOP in methods  # the refused stream was ended ...
    after = methods[methods.index(STOP) + 1 :]
    assert after
    assert set(after) == {"chat.update"}
    first_update = next(c for c in slack.chat_calls("C1") if c.method == "chat.update")
    streamed = [c for c in slack.calls_to(APPEND) if not c.rejected]
    shown = "".join(str(c.params["markdown_text"]) for c in streamed)
    assert words(str(first_update.params["text"]))[: len(words(shown))] == words(shown)  # ... and went on from it
    assert [(c.method, c.error) for c in slack.rejected] == [(APPEND, "messaging_processing_failed")]
    assert_paced(slack, "C1")


async def test_a_top_level_dm_keeps_edits_and_a_dm_thread_streams(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    dm = {"type": "message", "channel": "D1", "channel_type": "im", "user": "U1"}
    key = ConversationKey("slack", "D1", None, "U1")
    async with make_app(settings_for(make_settings, slack), slow(30)) as app:
        await slack.send_event(dm | {"text": "tell me a story", "ts": "1700000400.000100"})
        top = await reply_in(app.store, key)
        thread = "1700000400.000100"
        await slack.send_event(dm | {"text": "and more", "ts": "1700000401.000100", "thread_ts": thread})
        threaded = await reply_in(app.store, key, replies=2)
    (top_post,) = slack.posted("D1", None)
    assert top_post.text == to_mrkdwn(top.text)
    assert len(top_post.history) >= 2  # chat.update
    (thread_post,) = slack.posted("D1", thread)
    assert thread_post.markdown
    assert thread_post.text == threaded.text
    assert thread_post.recipient is None  # a DM names no recipient
    assert slack.rejected == []


async def test_a_long_streamed_reply_rolls_over_into_new_messages_in_the_thread(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    ts = "1700000500.000100"
    key = ConversationKey("slack", "C1", ts, None)
    async with make_app(
        settings_for(make_settings, slack, max_tokens=1000), ScriptedEngine(lambda _: essay(1000), delay=0.002)
    ) as app:
        await slack.send_event(mention(ts))
        turn = await reply_in(app.store, key)
    posts: list[Posted] = slack.posted("C1", ts)
    assert len(posts) >= 3
    assert turn.message_ids == tuple(p.ts for p in posts)
    assert not any(p.streaming for p in posts)
    assert all(len(p.text) <= 3500 for p in posts), [len(p.text) for p in posts]
    assert words("\n".join(p.text for p in posts)) == words(turn.text)
    assert len(slack.calls_to(START)) == len(posts)
    assert_paced(slack, "C1")
    assert slack.rejected == []


async def test_native_streaming_can_be_turned_off(make_settings: MakeSettings, slack: FakeSlack) -> None:
    ts = "1700000600.000100"
    async with make_app(settings_for(make_settings, slack, native_streaming=False), slow(30)) as app:
        await slack.send_event(mention(ts))
        turn = await reply_in(app.store, ConversationKey("slack", "C1", ts, None))
        turns = await stored_turns(app.store, ConversationKey("slack", "C1", ts, None))
    assert turns[-1] == turn
    (post,) = slack.posted("C1", ts)
    assert post.text == to_mrkdwn(turn.text)
    assert [c for c in slack.calls if c.method.endswith("Stream")] == []


async def test_an_edit_of_a_message_left_streaming_ends_the_stream_first(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    """A reply cut off by a crash leaves its stream open; the resumed reply edits that message."""
    slack.min_gap = 0  # these calls are not paced by the core
    async with make_app(settings_for(make_settings, slack)) as app:
        connector = app.connectors[0]
        assert isinstance(connector, SlackConnector)
        stream = connector.native_stream(Destination("C1", thread="1700000700.000100", user="U2"))
        assert stream is not None
        await stream.start()
        await stream.update("half a rep")
        assert stream.message is not None
        await connector.edit(stream.message, "the whole reply")
    (post,) = slack.posted("C1", "1700000700.000100")
    assert not post.streaming
    assert post.text == "the whole reply"
    assert [c.error for c in slack.rejected] == ["streaming_state_conflict"]
