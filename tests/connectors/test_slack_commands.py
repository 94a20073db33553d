"""Slack slash commands, and ``parley slack-manifest``.

The app (scripted engine, real store) with the real slack-bolt against the fake Slack: commands
come in as Socket Mode ``slash_commands`` envelopes or signed form posts, answers go out as
``chat.postMessage``/``chat.update`` (in the channel) or ``chat.postEphemeral`` (to the caller).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.conversation import ConversationKey
from bot.settings import SlackSettings
from bot.store import Store, Turn, TurnStatus
from connectors.slack.manifest import BOT_EVENTS, BOT_SCOPES, build_manifest
from connectors.slack.render import to_mrkdwn
from plugins.core import router as core_router
from tests.conftest import MakeSettings
from tests.connectors.conftest import essay
from tests.connectors.test_slack import answered, assert_paced, socket_settings
from tests.fakes.slack import FakeSlack, post_command
from tests.support import ScriptedEngine, make_app, scripted_engine, wait_turns, wait_until

SECRET = "s3cret"

MAX_TOKENS = 600
"""Room for a reply that is still being written when /stop arrives."""


@pytest.fixture
def slack(fake_slack: FakeSlack) -> FakeSlack:
    return fake_slack


def ephemeral_to(slack: FakeSlack, user: str) -> list[str]:
    return [e.text for e in slack.ephemeral if e.user == user]


async def until_ephemeral(slack: FakeSlack, user: str, count: int = 1) -> list[str]:
    await wait_until(lambda: len(ephemeral_to(slack, user)) >= count, what=f"{count} ephemeral answers to {user}")
    return ephemeral_to(slack, user)


async def test_commands_answered_in_channel_refused_ephemerally_and_admins_recognised(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    slack.admins.add("UADMIN")  # a workspace admin according to users.info
    slack.not_member.add("CNOPE")
    settings = make_settings(
        slack=socket_settings(slack, command_prefix="parley-"), web={"enabled": False}, admins=["slack:UCONF"]
    )
    async with make_app(settings) as app:
        sent = await slack.send_command("/parley-ping", user="U1", channel="C1")
        assert sent.delay < 3.0
        assert not sent.ack.get("payload")  # acked empty: the answer comes as a channel message

        await wait_until(lambda: any("pong" in p.text for p in slack.posted("C1")), what="pong")
        (post,) = slack.posted("C1", any_thread=True)
        assert "you are slack:U1" in post.text
        assert post.thread_ts is None

        # A member's /system is refused to them alone and changes nothing.
        before = app.store.channel_settings("slack", "C1")
        sent = await slack.send_command("/parley-system", "Talk like a pirate.", user="U1", channel="C1")
        assert sent.delay < 3.0
        assert (await until_ephemeral(slack, "U1")) == ["Only admins can use /parley-system."]
        assert app.store.channel_settings("slack", "C1") == before

        # Bad arguments get the usage, ephemerally; no traceback.
        await slack.send_command("/parley-scope", "bogus", user="UCONF", channel="C1")
        (usage,) = await until_ephemeral(slack, "UCONF")
        assert "Usage: /parley-scope &lt;shared|per-user&gt;" in usage  # escaped for mrkdwn
        assert "bogus" in usage
        assert "Traceback" not in usage
        await slack.send_command("/parley-ask", "", user="UCONF", channel="C1")
        assert "prompt is missing" in (await until_ephemeral(slack, "UCONF", 2))[1]

        # A workspace admin's /system and a PARLEY_ADMINS user's /scope take effect.
        await slack.send_command("/parley-system", "Talk like a pirate &amp; sing.", user="UADMIN", channel="C1")
        # One at a time: two setting commands running at once can lose one update (read, then write).
        await wait_until(
            lambda: app.store.channel_settings("slack", "C1").system_prompt == "Talk like a pirate & sing.",
            what="the system prompt applied",
        )
        await slack.send_command("/parley-scope", "shared", user="UCONF", channel="C1")

        def applied() -> bool:
            current = app.store.channel_settings("slack", "C1")
            return current.system_prompt == "Talk like a pirate & sing." and current.scope == "shared"

        await wait_until(applied, what="the settings applied")
        assert ephemeral_to(slack, "UADMIN") == []

        # Where the bot is not a member, the caller learns it through the command's response_url.
        await slack.send_command("/parley-ping", user="U1", channel="CNOPE")

        await wait_until(lambda: slack.responses, what="an answer through the response_url")
        (_, response) = slack.responses[0]
        assert response["response_type"] == "ephemeral"
        assert "invite me" in response["text"]

        assert_paced(slack, "C1")
        assert [c.error for c in slack.rejected] == ["not_in_channel"]
        assert all(c.status == 200 for c in slack.calls)


async def test_ask_streams_into_the_channel_and_stop_ends_replies(
    make_settings: MakeSettings, slack: FakeSlack
) -> None:
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False}, engine={"max_tokens": MAX_TOKENS})
    engine = ScriptedEngine(lambda m: essay(MAX_TOKENS) if "Rome" in m[-1].content else "Paris, of course.", delay=0.4)
    async with make_app(settings, engine) as app:
        channel_key = ConversationKey("slack", "C1", None, "U1")
        sent = await slack.send_command("/ask", "What is the capital of France? Answer briefly.", channel="C1")
        assert sent.delay < 3.0
        turns = await answered(app.store, channel_key)
        assert [t.role for t in turns] == ["user", "assistant"]
        assert turns[0].text == "What is the capital of France? Answer briefly."
        assert engine.prompts[-1][-1].content == "What is the capital of France? Answer briefly."
        (post,) = slack.posted("C1")
        assert post.text == to_mrkdwn(turns[1].text) == "Paris, of course."
        assert len(post.history) >= 2  # a placeholder, then the streamed text
        assert turns[1].message_ids == (post.ts,)

        # /stop during a streaming /ask in the channel ...
        engine.delay = 0.05
        essay_prompt = "Write a very long and detailed essay about the history of Rome, with many sections."
        updates = len(slack.calls_to("chat.update", "C1"))
        await slack.send_command("/ask", essay_prompt, channel="C1")
        stopped = await _stop_while_streaming(app.store, slack, channel_key, "C1", updates)
        assert stopped.text
        (_, post) = slack.posted("C1")
        assert post.text == to_mrkdwn(stopped.text)

        # ... and during a reply to a direct message.
        dm_key = ConversationKey("slack", "D1", None, "U1")
        await slack.send_event(
            {
                "type": "message",
                "channel": "D1",
                "channel_type": "im",
                "user": "U1",
                "text": essay_prompt,
                "ts": "1700.1",
            }
        )
        await _stop_while_streaming(app.store, slack, dm_key, "D1", 0)
        assert (await until_ephemeral(slack, "U1", 2)) == ["Stopped.", "Stopped."]
        assert scripted_engine(app).busy == 0
        assert slack.rejected == []


async def _stop_while_streaming(
    store: Store, slack: FakeSlack, key: ConversationKey, channel: str, updates_before: int
) -> Turn:
    """Wait until the reply has been edited at least once, send /stop, check the reply ends promptly."""

    def streaming(turns: list[Turn]) -> bool:
        edited = len(slack.calls_to("chat.update", channel)) > updates_before
        return bool(turns) and turns[-1].status is TurnStatus.STREAMING and edited

    await wait_turns(store, key, streaming, what="a streaming reply")
    sent = await slack.send_command("/stop", channel=channel)
    assert sent.delay < 3.0
    turns = await wait_turns(
        store,
        key,
        lambda turns: turns[-1].status is not TurnStatus.STREAMING,
        what="the reply ended",
    )
    turn = turns[-1]
    assert turn.status is TurnStatus.STOPPED
    # Generation stopped at the /stop, well short of the reply's budget (no wall-clock bound:
    # the CPU may be shared).
    assert turn.token_count < MAX_TOKENS // 2
    assert essay(MAX_TOKENS).startswith(turn.text.rstrip())
    return turn


async def test_http_mode_runs_signed_commands_only(make_settings: MakeSettings, slack: FakeSlack) -> None:
    slack_settings = SlackSettings(bot_token=slack.bot_token, signing_secret=SECRET, api_url=slack.url)
    async with make_app(make_settings(slack=slack_settings)) as app:
        assert app.web is not None
        url = f"{app.web.url.rstrip('/')}/slack/events"
        assert (await post_command(url, slack.command_payload("/ping", channel="C2"), "wrong"))[0] == 401
        started = time.monotonic()
        assert await post_command(url, slack.command_payload("/ping", channel="C2"), SECRET) == (200, "")
        assert time.monotonic() - started < 3.0

        await wait_until(lambda: slack.posted("C2"), what="pong")
        (post,) = slack.posted("C2")
        assert post.text.startswith("pong")
        assert len(slack.calls_to("chat.postMessage")) == 1  # the badly signed one ran nothing


def test_manifest_command_prints_every_command_for_socket_mode() -> None:
    # PYTHONPATH: the code of this checkout, not whichever one the venv was installed from.
    root = str(Path(__file__).resolve().parents[2])
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": root, "PARLEY_SLACK__APP_TOKEN": "xapp-1-test"}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "slack-manifest"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert set(commands) == {f"/{c.name}" for c in core_router.commands}
    assert commands["/ask"]["usage_hint"] == "<prompt>"
    assert commands["/scope"]["usage_hint"] == "<shared|per-user>"
    assert commands["/system"]["usage_hint"] == "[text]"
    assert commands["/listen"]["usage_hint"] == "[on|off]"
    # Listen mode needs channel messages that do not mention the bot: their events and scopes.
    assert {"message.channels", "message.groups"} <= set(BOT_EVENTS)
    assert {"channels:history", "groups:history"} <= set(BOT_SCOPES)
    assert all(c["should_escape"] is False and c["description"] for c in commands.values())
    assert all("url" not in c for c in commands.values())
    assert manifest["oauth_config"]["scopes"]["bot"] == list(BOT_SCOPES)
    assert "commands" in BOT_SCOPES
    assert "users:read" in BOT_SCOPES
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["event_subscriptions"] == {"bot_events": list(BOT_EVENTS)}

    bad = subprocess.run(
        [sys.executable, "-m", "bot", "slack-manifest"],
        check=False,
        env=env | {"PARLEY_SLACK__COMMAND_PREFIX": "no spaces"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "PARLEY_SLACK__COMMAND_PREFIX" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_manifest_for_http_mode_points_commands_and_events_at_the_public_url() -> None:
    settings = SlackSettings(bot_token="xoxb-x", public_url="https://bot.example.org/", command_prefix="Parley-")
    manifest = build_manifest(settings, core_router.commands)
    url = "https://bot.example.org/slack/events"
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert manifest["settings"]["event_subscriptions"]["request_url"] == url
    commands = manifest["features"]["slash_commands"]
    assert {c["command"] for c in commands} == {f"/parley-{c.name}" for c in core_router.commands}
    assert {c["url"] for c in commands} == {url}
