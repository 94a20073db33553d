"""Several models on Slack: /model as a slash command through slack_bolt against the fake."""

from __future__ import annotations

from typing import Any

from bot.conversation import ConversationKey
from connectors.slack.manifest import build_manifest
from tests.conftest import MakeSettings
from tests.connectors.test_slack import answered, dm, socket_settings
from tests.fakes.slack import FakeSlack
from tests.support import ScriptedModels, make_app, wait_until

ALICE = ConversationKey("slack", "D1", None, "U1")
BOB = ConversationKey("slack", "D2", None, "U2")
MODELS: dict[str, Any] = {"fast": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "fast-1"}}


async def test_a_model_switch_stays_in_its_dm_and_survives_a_restart(
    make_settings: MakeSettings, fake_slack: FakeSlack
) -> None:
    slack = fake_slack
    settings = make_settings(
        slack=socket_settings(slack), web={"enabled": False}, models=MODELS, limits={"messages_per_minute": 0}
    )
    async with make_app(settings, factory=ScriptedModels()) as app:
        manifest = build_manifest(settings.slack, app.chat.command_list)
        assert "/model" in {c["command"] for c in manifest["features"]["slash_commands"]}
        await slack.send_command("/model", "fast", user="U1", channel="D1")
        await wait_until(lambda: any("Model set to fast" in p.text for p in slack.posted("D1")), what="/model")

        await slack.send_event(dm("Which model?", "1700000060.000100"))
        assert (await answered(app.store, ALICE))[-1].text == "[fast-1] You said: Which model?"
        await slack.send_event(dm("Which model?", "1700000061.000100", user="U2", channel="D2"))
        assert (await answered(app.store, BOB))[-1].text == "You said: Which model?"
        assert any("[fast-1] You said" in p.text for p in slack.posted("D1"))

    async with make_app(settings, factory=ScriptedModels()) as app:
        await slack.send_event(dm("And now?", "1700000062.000100"))
        assert (await answered(app.store, ALICE, 2))[-1].text == "[fast-1] You said: And now?"
        await slack.send_event(dm("And now?", "1700000063.000100", user="U2", channel="D2"))
        assert (await answered(app.store, BOB, 2))[-1].text == "You said: And now?"
