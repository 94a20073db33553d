"""Markdown to mrkdwn, and which Slack events the bot answers (pure functions, no network)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from connectors.slack.connector import api_base
from connectors.slack.events import BotIdentity, RecentKeys, translate
from connectors.slack.mrkdwn import to_mrkdwn

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


def event(**fields: Any) -> dict[str, Any]:
    return {"type": "message", "channel": "C1", "channel_type": "channel", "user": "U1", "ts": "1.1"} | fields


def test_a_top_level_mention_starts_a_shared_thread() -> None:
    message = translate(event(text="<@UBOT|parley>  hi   there"), ME, RecentKeys(), user_name="Ada")
    assert message is not None
    assert (message.addressed, message.thread, message.is_direct) == (True, "1.1", False)
    assert message.text == "hi there"
    assert message.user_name == "Ada"


def test_threads_are_answered_when_the_bot_takes_part() -> None:
    threads = RecentKeys()
    reply = event(text="and then?", ts="1.5", thread_ts="1.1")
    assert translate(reply, ME, threads).addressed is False  # type: ignore[union-attr]
    threads.add(("C1", "1.1"))
    assert translate(reply, ME, threads).addressed is True  # type: ignore[union-attr]
    rooted = event(text="x", ts="2.5", thread_ts="2.1", parent_user_id="UBOT")
    assert translate(rooted, ME, RecentKeys()).thread == "2.1"  # type: ignore[union-attr]


def test_direct_messages_are_per_user_and_keep_their_thread() -> None:
    top = translate(event(channel="D1", channel_type="im", text="a &amp; b &lt;3"), ME, RecentKeys())
    assert top is not None
    assert (top.addressed, top.is_direct, top.thread, top.text) == (True, True, None, "a & b <3")
    threaded = translate(event(channel="D1", channel_type="im", text="x", ts="3.2", thread_ts="3.1"), ME, RecentKeys())
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
    assert translate(event(text="<@UBOT> hi", **fields), ME, RecentKeys()) is None


def test_recent_keys_forget_the_oldest() -> None:
    keys = RecentKeys(size=2)
    assert keys.add("a")
    assert keys.add("b")
    assert not keys.add("a")  # and "a" is now the newest
    keys.add("c")
    assert "b" not in keys
    assert "a" in keys
    assert len(keys) == 2
