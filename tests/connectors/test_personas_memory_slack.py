"""Personas and memory on Slack: slash commands through slack_bolt against the fake."""

from __future__ import annotations

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_slack import answered, dm, socket_settings
from tests.connectors.test_slack_commands import until_ephemeral
from tests.fakes.slack import FakeSlack
from tests.support import make_app, scripted_engine, wait_until


async def test_a_persona_and_a_note_apply_to_their_owners_dm_only(
    make_settings: MakeSettings, fake_slack: FakeSlack
) -> None:
    slack = fake_slack
    settings = make_settings(
        slack=socket_settings(slack),
        web={"enabled": False},
        personas={"pirate": "Talk like a pirate."},
        limits={"messages_per_minute": 0},
    )
    async with make_app(settings) as app:
        engine = scripted_engine(app)
        await slack.send_command("/persona", "pirate", user="U1", channel="D1")
        await wait_until(lambda: any("Persona set to pirate" in p.text for p in slack.posted("D1")), what="persona")
        await slack.send_command("/remember", "My dog is called Rex.", user="U1", channel="D1")
        assert "Kept as your note 1" in (await until_ephemeral(slack, "U1"))[0]

        await slack.send_event(dm("What is my dog called?", "1700000060.000100"))
        await answered(app.store, ConversationKey("slack", "D1", None, "U1"))
        alice = engine.prompts[-1]
        await slack.send_event(dm("What is my dog called?", "1700000061.000100", user="U2", channel="D2"))
        await answered(app.store, ConversationKey("slack", "D2", None, "U2"))
        bob = engine.prompts[-1]

    assert alice[0].content == "Talk like a pirate."
    assert "My dog is called Rex." in alice[-1].content
    assert bob[0].content == settings.system_prompt
    assert all("Rex" not in m.content for m in bob)
