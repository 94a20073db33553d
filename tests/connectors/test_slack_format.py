"""Markdown to mrkdwn, and which Slack events the bot answers (pure functions, no network)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.bounded import BoundedSet
from connectors.slack.connector import api_base
from connectors.slack.inbound import BotIdentity, ThreadKeys, is_direct_channel, to_command_request, to_incoming
from connectors.slack.render import to_mrkdwn

ME = BotIdentity("UBOT", "BBOT")


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and *italic* and _also_", "*bold* and _italic_ and _also_"),
        ("~~gone~~ `a<b>&c`", "~gone~ `a&lt;b&gt;&amp;c`"),
        ("[docs](https://x.test/?a=1&b=2)", "<https://x.test/?a=1&amp;b=2|docs>"),
        ("<https://x.test>", "<https://x.test>"),
        ("# Title\n\ntext", "*Title*\n\ntext"),
        ("- one\n- **two**\n  - deeper", "• one\n• *two*\n    • deeper"),
        ("3. c\n4. d", "3. c\n4. d"),
        ("> quoted\n> more", "> quoted\n> more"),
        ("```python\nif a < b:\n    pass\n```", "```\nif a &lt; b:\n    pass\n```"),
        ("1 < 2 & 3 > 2", "1 &lt; 2 &amp; 3 &gt; 2"),
        ("**half-written", "**half-written"),
        ("```\nstill open", "```\nstill open\n```"),
        ("<@U123> <!channel>", "&lt;@U123&gt; &lt;!channel&gt;"),  # the model cannot ping anyone
    ],
)
def test_markdown_becomes_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


@pytest.mark.parametrize(
    "markdown",
    ["[ref]: https://x.test", "| a | b |\n|---|---|\n| 1 | 2 |", "<div>raw *html*</div>", "***", "a\\*b\\*"],
)
def test_no_text_is_lost(markdown: str) -> None:
    words = re.findall(r"[A-Za-z0-9]+", markdown)
    rendered = re.findall(r"[A-Za-z0-9]+", to_mrkdwn(markdown))
    assert [w for w in words if w not in ("amp", "lt", "gt")] == [w for w in rendered if w not in ("amp", "lt", "gt")]


def test_api_base() -> None:
    assert api_base(None) == "https://slack.com/api/"
    assert api_base("http://127.0.0.1:9") == "http://127.0.0.1:9/api/"
    assert api_base("https://slack-gov.com/api/") == "https://slack-gov.com/api/"


def threads() -> ThreadKeys:
    return BoundedSet(16)


def event(**fields: Any) -> dict[str, Any]:
    return {"type": "message", "channel": "C1", "channel_type": "channel", "user": "U1", "ts": "1.1"} | fields


def test_a_top_level_mention_starts_a_shared_thread() -> None:
    message = to_incoming(event(text="<@UBOT|parley>  hi   there"), ME, threads(), user_name="Ada")
    assert message is not None
    assert (message.addressed, message.thread, message.is_direct) == (True, "1.1", False)
    assert message.text == "hi there"
    assert message.user_name == "Ada"


def test_threads_are_answered_when_the_bot_takes_part() -> None:
    known = threads()
    reply = event(text="and then?", ts="1.5", thread_ts="1.1")
    assert to_incoming(reply, ME, known).addressed is False  # type: ignore[union-attr]
    known.add(("C1", "1.1"))
    assert to_incoming(reply, ME, known).addressed is True  # type: ignore[union-attr]
    rooted = event(text="x", ts="2.5", thread_ts="2.1", parent_user_id="UBOT")
    assert to_incoming(rooted, ME, threads()).thread == "2.1"  # type: ignore[union-attr]


def test_direct_messages_are_per_user_and_keep_their_thread() -> None:
    top = to_incoming(event(channel="D1", channel_type="im", text="a &amp; b &lt;3"), ME, threads())
    assert top is not None
    assert (top.addressed, top.is_direct, top.thread, top.text) == (True, True, None, "a & b <3")
    threaded = to_incoming(event(channel="D1", channel_type="im", text="x", ts="3.2", thread_ts="3.1"), ME, threads())
    assert threaded is not None
    assert threaded.thread == "3.1"


@pytest.mark.parametrize(
    "fields",
    [
        {"bot_id": "BOTHER", "subtype": "bot_message"},
        {"bot_id": "BBOT"},
        {"user": "UBOT"},
        {"subtype": "message_changed"},
        {"subtype": "channel_join"},
        {"user": None},
    ],
)
def test_bots_and_housekeeping_are_ignored(fields: dict[str, Any]) -> None:
    assert to_incoming(event(text="<@UBOT> hi", **fields), ME, threads()) is None


def test_a_dm_is_told_by_its_channel_id_when_the_event_has_no_channel_type() -> None:
    assert is_direct_channel("D024BE91L")
    assert not is_direct_channel("C1")
    assert not is_direct_channel("G1")  # a group DM counts as a group
    mention = {"type": "app_mention", "channel": "D1", "user": "U1", "text": "<@UBOT> hi", "ts": "4.1"}
    message = to_incoming(mention, ME, threads())
    assert message is not None
    assert (message.is_direct, message.thread, message.text) == (True, None, "hi")


def test_slash_commands_become_requests_without_the_prefix() -> None:
    payload = {
        "command": "/parley-ask",
        "text": "is 1 &lt; 2 &amp; 3?  ",
        "user_id": "U1",
        "user_name": "ada",
        "channel_id": "C1",
        "response_url": "https://hooks.example/1",
    }
    request = to_command_request(payload, prefix="parley-", is_admin=True)
    assert request is not None
    assert (request.name, request.args, request.user_name, request.prefix) == ("ask", "is 1 < 2 & 3?", "ada", "parley-")
    assert (request.channel, request.thread, request.is_direct, request.is_admin) == ("C1", None, False, True)
    destination = request.reply_destination()
    assert (destination.channel, destination.is_group) == ("C1", True)
    assert destination.handle.user == "U1"  # type: ignore[attr-defined]
    assert destination.handle.response_url == "https://hooks.example/1"  # type: ignore[attr-defined]
    in_dm = to_command_request(payload | {"channel_id": "D7", "command": "/ping"}, prefix="parley-")
    assert in_dm is not None
    assert (in_dm.name, in_dm.is_direct, in_dm.reply_destination().is_group) == ("ping", True, False)
    assert to_command_request(payload | {"channel_id": ""}, prefix="") is None
    assert to_command_request({"command": "/ping", "channel_id": "C1"}, prefix="") is None
