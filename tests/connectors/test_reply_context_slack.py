"""Reply context on Slack: slack_bolt against the fake; a thread someone else started brings its root along."""

from __future__ import annotations

import logging

import pytest

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_slack import answered, channel_message, socket_settings
from tests.fakes.slack import FakeSlack
from tests.support import make_app, scripted_engine

ROOT = "1700000070.000100"
KEY = ConversationKey("slack", "C1", ROOT, None)


async def test_an_answer_in_someone_elses_thread_brings_the_root_once_fetched(
    make_settings: MakeSettings, fake_slack: FakeSlack
) -> None:
    slack = fake_slack
    async with make_app(make_settings(slack=socket_settings(slack), web={"enabled": False})) as app:
        await slack.send_event(channel_message("The deploy is\nat 5pm &amp; not before.", ROOT))
        asked = channel_message("<@UBOT> when exactly?", "1700000071.000100", user="U1", thread_ts=ROOT)
        await slack.send_event(asked | {"parent_user_id": "U2"})
        turns = await answered(app.store, KEY)
        first = scripted_engine(app).prompts[-1]
        again = channel_message("and after?", "1700000072.000100", user="U3", thread_ts=ROOT, parent_user_id="U2")
        await slack.send_event(again)
        await answered(app.store, KEY, replies=2)
        second = scripted_engine(app).prompts[-1]
    assert first[-1].content == '[name-U1]: [replying to name-U2: "The deploy is at 5pm & not before."]\nwhen exactly?'
    assert second[-1].content == '[name-U3]: [replying to name-U2: "The deploy is at 5pm & not before."]\nand after?'
    assert turns[0].text == "when exactly?"  # the quote is in that turn's prompt, not in the history
    [fetched] = slack.calls_to("conversations.replies")  # once per thread: cached
    assert (fetched.params["channel"], fetched.params["ts"], fetched.params["limit"]) == ("C1", ROOT, "1")


async def test_the_users_own_thread_the_bots_and_a_mention_root_bring_no_quote(
    make_settings: MakeSettings, fake_slack: FakeSlack
) -> None:
    slack = fake_slack
    mentioned_root = "1700000080.000100"
    async with make_app(make_settings(slack=socket_settings(slack), web={"enabled": False}, quote_chars=500)) as app:
        await slack.send_event(channel_message("my own idea", ROOT, user="U1"))
        own = channel_message("<@UBOT> thoughts?", "1700000071.000100", user="U1", thread_ts=ROOT, parent_user_id="U1")
        await slack.send_event(own)
        await answered(app.store, KEY)
        own_prompt = scripted_engine(app).prompts[-1]
        await slack.send_event(channel_message("<@UBOT> start here", mentioned_root, user="U2"))
        thread = ConversationKey("slack", "C1", mentioned_root, None)
        await answered(app.store, thread)
        reply = channel_message("and me?", "1700000081.000100", user="U3", thread_ts=mentioned_root)
        await slack.send_event(reply | {"parent_user_id": "U2"})
        await answered(app.store, thread, replies=2)
        mention_prompt = scripted_engine(app).prompts[-1]
    assert own_prompt[-1].content == "[name-U1]: thoughts?"
    assert [m.content for m in mention_prompt if m.role == "user"] == ["[name-U2]: start here", "[name-U3]: and me?"]
    assert len(slack.calls_to("conversations.replies")) == 1  # the user's own root is not even fetched


async def test_a_failed_fetch_answers_without_the_quote_and_says_why_in_the_log(
    make_settings: MakeSettings, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    slack = fake_slack
    slack.rate_limit("conversations.replies")
    async with make_app(make_settings(slack=socket_settings(slack), web={"enabled": False})) as app:
        await slack.send_event(channel_message("the root", ROOT))
        with caplog.at_level(logging.WARNING, logger="connectors.slack.connector"):
            asked = channel_message("<@UBOT> hi", "1700000071.000100", user="U1", thread_ts=ROOT, parent_user_id="U2")
            await slack.send_event(asked)
            await answered(app.store, KEY)
        prompt = scripted_engine(app).prompts[-1]
    assert prompt[-1].content == "[name-U1]: hi"
    assert any(
        "could not read the root of thread" in r.getMessage() and "ratelimited" in r.getMessage()
        for r in caplog.records
    )
