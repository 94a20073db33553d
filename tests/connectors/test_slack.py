"""The Slack connector: the real slack-bolt/slack_sdk against a fake Slack on loopback.

One test runs the whole app on the bundled model; the others answer with the scripted engine,
which records the prompts it was given. Each test talks to the app only the way Slack would:
Socket Mode envelopes or signed HTTP events in, Web API calls out.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from typing import Any

import aiohttp
import pytest

from bot.conversation import ConversationKey
from bot.errors import ConfigError, ConnectorError
from bot.settings import SlackSettings
from bot.store import Store, Turn, TurnStatus
from bot.streamer import PLACEHOLDER
from connectors.slack.connector import MAX_MESSAGE_CHARS
from connectors.slack.render import to_mrkdwn
from tests.conftest import MakeSettings
from tests.connectors.conftest import essay
from tests.fakes.slack import FakeSlack, post_event, sign
from tests.support import ScriptedEngine, make_app, scripted_engine, stored_turns, wait_reply, wait_turns

SECRET = "s3cret"
SLACK_MAX = 3500  # what each Slack message must stay under


@pytest.fixture
def slack(fake_slack: FakeSlack) -> FakeSlack:
    return fake_slack


def socket_settings(slack: FakeSlack, **extra: str) -> SlackSettings:
    return SlackSettings(bot_token=slack.bot_token, app_token=slack.app_token, api_url=slack.url, **extra)


async def answered(store: Store, key: ConversationKey, replies: int = 1, timeout: float = 60.0) -> list[Turn]:
    """The conversation's turns once its ``replies``-th reply is finished and complete."""
    turn = await wait_reply(store, key, replies, timeout)
    assert turn.status is TurnStatus.COMPLETE, turn
    return await stored_turns(store, key)


def dm(text: str, ts: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel": "D1", "channel_type": "im", "user": "U1", "text": text, "ts": ts} | extra


def channel_message(text: str, ts: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel": "C1", "channel_type": "channel", "user": "U2", "text": text, "ts": ts} | extra


def assert_paced(slack: FakeSlack, channel: str) -> None:
    """About one call per second per channel: no two accepted chat calls closer than 0.9 s (appends
    to a chat stream are Tier 4 and paced apart)."""
    times = [c.at for c in slack.chat_calls(channel) if not c.rejected and c.method != "chat.appendStream"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.9 for gap in gaps), gaps


async def test_dm_on_the_real_model_answered_with_paced_updates(make_settings: MakeSettings, slack: FakeSlack) -> None:
    """End to end: the bundled model's words, streamed into one message."""
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False}, engine={"max_tokens": 96})
    async with make_app(settings, real_engine=True) as app:
        assert app.status()["slack"] == "running"
        key = ConversationKey("slack", "D1", None, "U1")
        ack = await slack.send_event(
            dm("Write a long and detailed essay about the moon, with many sections.", "1700000001.000100"),
            event_id="EvDM1",
        )
        assert ack is not None
        assert ack["envelope_id"]

        turns = await answered(app.store, key, timeout=240)
        assert [t.role for t in turns] == ["user", "assistant"]
        assert turns[0].text == "Write a long and detailed essay about the moon, with many sections."
        reply = turns[1]

        posts = slack.posted("D1", any_thread=True)
        assert len(posts) == 1
        post = posts[0]
        assert post.thread_ts is None  # a top-level DM is answered at top level
        assert post.text == to_mrkdwn(reply.text)
        assert reply.message_ids == (post.ts,)
        # Streamed: the placeholder came first and edits wrote the words into it. How many edits a
        # reply gets depends on how fast this machine's model is against the 1 s pace (a fast one
        # finishes 96 tokens before the second edit is due); the slow scripted tests in
        # test_slack_native.py check several edits.
        assert post.history[0] == PLACEHOLDER
        assert len(slack.calls_to("chat.update", "D1")) >= 1
        assert_paced(slack, "D1")
        assert slack.rejected == []
        # the fake echoed the bot's own message as an event; it was not answered
        assert len(slack.calls_to("chat.postMessage")) == 1


async def test_mention_answered_once_in_a_thread_that_continues(make_settings: MakeSettings, slack: FakeSlack) -> None:
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False})
    async with make_app(settings) as app:
        ts = "1700000002.000200"
        text = "<@UBOT> Tell me a joke about cats"
        key = ConversationKey("slack", "C1", ts, None)
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

        turns = await answered(app.store, key)
        assert turns[0].text == "Tell me a joke about cats"  # the mention is not shown to the model
        assert turns[0].role == "user"
        posts = slack.posted("C1", any_thread=True)
        assert [p.thread_ts for p in posts] == [ts]  # one reply, in a new thread under the mention
        assert posts[0].markdown  # streamed with chat.startStream/appendStream/stopStream
        assert posts[0].text == turns[1].text

        # A reply in that thread needs no mention and continues the same shared conversation.
        await slack.send_event(channel_message("Another one please", "1700000007.000700", thread_ts=ts, user="U3"))
        turns = await answered(app.store, key, replies=2)
        assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
        assert turns[2].text == "Another one please"
        engine = scripted_engine(app)
        assert len(engine.prompts) == 2  # once per mention/thread message, never for the rest
        assert [m.content for m in engine.prompts[-1] if m.role != "system"] == [
            "[name-U2]: Tell me a joke about cats",
            "You said: [name-U2]: Tell me a joke about cats",
            "[name-U3]: Another one please",
        ]
        posts = slack.posted("C1", any_thread=True)
        assert [p.thread_ts for p in posts] == [ts, ts]
        assert posts[1].text == turns[3].text
        assert len(slack.calls_to("chat.startStream")) == 2
        assert_paced(slack, "C1")
        assert slack.rejected == []
        assert len(slack.acks) >= 9  # every envelope acknowledged, answered or not


async def test_rate_limited_update_is_waited_out(make_settings: MakeSettings, slack: FakeSlack) -> None:
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False})
    slack.rate_limit("chat.update", times=1, retry_after=2)
    async with make_app(settings) as app:
        await slack.send_event(dm("Write a short poem about the sea.", "1700000010.000100"))
        turns = await answered(app.store, ConversationKey("slack", "D1", None, "U1"))

        rejected = slack.rejected
        assert [(c.method, c.status) for c in rejected] == [("chat.update", 429)]
        later = [c for c in slack.chat_calls("D1") if c.at > rejected[0].at]
        assert later, "the reply went on after the 429"
        assert later[0].at - rejected[0].at >= 1.9  # Retry-After was honoured for the channel
        (post,) = slack.posted("D1")
        assert post.text == to_mrkdwn(turns[1].text) == "You said: Write a short poem about the sea."


async def test_http_mode_verifies_signatures_and_answers_a_retry_once(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    slack_settings = SlackSettings(bot_token=slack.bot_token, signing_secret=SECRET, api_url=slack.url)
    async with make_app(make_settings(slack=slack_settings)) as app:
        assert app.web is not None
        url = f"{app.web.url.rstrip('/')}/slack/events"
        ts = "1700000020.000100"
        body = FakeSlack.event_body(dm("Hi there, who are you?", ts), "EvH1")

        challenge = {"type": "url_verification", "token": "t", "challenge": "c-123"}
        assert await post_event(url, challenge, SECRET) == (200, '{"challenge": "c-123"}')
        assert (await post_event(url, body, "wrong-secret"))[0] == 401
        assert (await post_event(url, body, SECRET, timestamp=int(time.time()) - 600))[0] == 401  # replayed
        assert (await post_event(url, body, SECRET))[0] == 200
        assert (await post_event(url, body, SECRET, retry_num=1))[0] == 200

        turns = await answered(app.store, ConversationKey("slack", "D1", None, "U1"))
        assert [t.role for t in turns] == ["user", "assistant"]
        assert len(scripted_engine(app).prompts) == 1  # the retry was not answered again
        (post,) = slack.posted("D1")
        assert post.text == to_mrkdwn(turns[1].text)
        assert len(slack.calls_to("chat.postMessage")) == 1
        assert slack.rejected == []


async def _post_raw(url: str, raw: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(url, data=raw, headers=headers) as response:
        return response.status, await response.text()


async def test_http_mode_refuses_forged_replayed_tampered_and_malformed_requests_without_a_5xx(
    make_settings: MakeSettings, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    slack_settings = SlackSettings(bot_token=slack.bot_token, signing_secret=SECRET, api_url=slack.url)
    async with make_app(make_settings(slack=slack_settings)) as app:
        assert app.web is not None
        url = f"{app.web.url.rstrip('/')}/slack/events"
        body = FakeSlack.event_body(dm("Hi there", "1700000021.000100"), "EvH2")
        raw = json.dumps(body).encode()
        now = int(time.time())
        as_json = {"Content-Type": "application/json"}
        as_form = {"Content-Type": "application/x-www-form-urlencoded"}
        tampered = raw.replace(b"Hi there", b"Hi thore")
        probes: dict[str, tuple[bytes, dict[str, str], int]] = {
            "forged": (raw, as_json | sign("not-the-secret", raw), 401),
            "replayed": (raw, as_json | sign(SECRET, raw, now - 600), 401),
            "from the future": (raw, as_json | sign(SECRET, raw, now + 600), 401),
            "tampered": (tampered, as_json | sign(SECRET, raw), 401),
            "unsigned": (raw, as_json, 401),
            "no signature": (raw, as_json | {"X-Slack-Request-Timestamp": str(now)}, 401),
            "timestamp not a number": (raw, as_json | sign(SECRET, raw) | {"X-Slack-Request-Timestamp": "soon"}, 401),
            "timestamp negative": (raw, as_json | sign(SECRET, raw, -5), 401),
            "timestamp of 5000 digits": (raw, as_json | {"X-Slack-Request-Timestamp": "9" * 5000}, 401),
            "timestamp in other digits": (raw, as_json | {"X-Slack-Request-Timestamp": "١٢٣"}, 401),
            "signature garbage": (raw, as_json | sign(SECRET, raw) | {"X-Slack-Signature": "v0=zz"}, 401),
        }
        signed = {
            "invalid JSON": (b'{"type": "event_callback", "event": ', as_json, 400),
            "JSON array": (b"[1, 2, 3]", as_json, 400),
            "JSON string": (b'"hello"', as_json, 400),
            "not UTF-8": (b'{"text": "\xff\xfe"}', as_json, 400),
            "a form payload that is not JSON": (b"payload=%7Bnope", as_form, 400),
            "a form payload that is a list": (b"payload=%5B1%5D", as_form, 400),
        }
        for name, (data, headers, status) in signed.items():
            probes[name] = (data, headers | sign(SECRET, data), status)
        caplog.clear()
        for name, (data, headers, status) in probes.items():
            got, text = await _post_raw(url, data, headers)
            assert (name, got) == (name, status), text
            assert len(text) < 200, (name, text)
            assert "Traceback" not in text, (name, text)
        refusals = [r for r in caplog.records if "refused a request to /slack/events" in r.getMessage()]
        assert len(refusals) == len(probes)  # one line each
        # A signed event of an odd shape is no server error either, and is not answered.
        odd_events: list[Any] = [{"type": "message"}, {"type": "message", "user": 5, "channel": [], "ts": {}}, "text"]
        for number, event in enumerate(odd_events):
            odd = body | {"event": event, "event_id": f"Ev-odd-{number}"}
            assert (await post_event(url, odd, SECRET))[0] in (200, 400), event
        assert (await post_event(url, {"type": "event_callback"}, SECRET))[0] == 404  # Bolt: nothing handles it
        assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
        assert scripted_engine(app).prompts == []
        assert await app.chat.inbox.depth() == 0
        assert slack.calls_to("chat.postMessage") == []


async def test_long_answer_rolls_over_into_new_messages_in_the_thread(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False}, engine={"max_tokens": 1000})
    async with make_app(settings, ScriptedEngine(lambda _: essay(1000))) as app:
        ts = "1700000030.000100"
        prompt = "<@UBOT> Write a very long and detailed essay about the history of Rome, with many sections."
        await slack.send_event({"type": "app_mention", "channel": "C1", "user": "U2", "text": prompt, "ts": ts})
        turns = await answered(app.store, ConversationKey("slack", "C1", ts, None))
        reply = turns[-1].text
        assert reply == essay(1000)
        assert len(reply) > 2 * MAX_MESSAGE_CHARS, len(reply)

        posts = slack.posted("C1", ts)
        assert len(posts) >= 3
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
    app = make_app(make_settings(slack=bad, web={"enabled": False}))
    with pytest.raises(ConnectorError, match=f"{failed_call} failed: invalid_auth"):
        await app.start()
    await app.stop()
    assert app.connectors[0].status() == "failed"
    assert slack.sockets == []  # nothing left connected


def test_http_mode_needs_the_web_server_and_a_signing_secret(make_settings: MakeSettings) -> None:
    with pytest.raises(ConfigError, match="PARLEY_WEB__ENABLED"):
        make_app(make_settings(slack=SlackSettings(bot_token="xoxb-x", signing_secret=SECRET), web={"enabled": False}))
    with pytest.raises(ConfigError, match="PARLEY_SLACK__SIGNING_SECRET"):
        make_app(make_settings(slack=SlackSettings(bot_token="xoxb-x")))


async def test_a_thread_answered_before_a_restart_still_needs_no_mention(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False})
    ts = "1700000010.000100"
    key = ConversationKey("slack", "C1", ts, None)
    async with make_app(settings) as app:
        await slack.send_event(channel_message("<@UBOT> Say hi", ts))
        await answered(app.store, key)
    async with make_app(settings) as app:  # a new process would remember nothing in memory either
        await slack.send_event(channel_message("And again?", "1700000011.000100", thread_ts=ts, user="U3"))
        await slack.send_event(channel_message("not for the bot", "1700000012.000100", thread_ts="1600000000.000009"))
        turns = await answered(app.store, key, replies=2)
        assert turns[2].text == "And again?"
        await wait_turns(app.store, key, lambda turns: len(turns) == 4, what="nothing more")
        assert [m.content for m in scripted_engine(app).prompts[-1] if m.role == "user"] == [
            "[name-U2]: Say hi",
            "[name-U3]: And again?",
        ]
    assert [p.thread_ts for p in slack.posted("C1", any_thread=True)] == [ts, ts]
