"""Listen mode on Slack: slack_bolt against the fake; /listen as a slash command, channel chatter as context."""

from __future__ import annotations

from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_slack import answered, channel_message, socket_settings
from tests.connectors.test_slack_commands import until_ephemeral
from tests.fakes.slack import FakeSlack
from tests.listen_support import heard_rows
from tests.support import make_app, scripted_engine, wait_until


async def test_a_listening_channel_brings_its_chatter_with_names_into_a_mention(
    make_settings: MakeSettings, fake_slack: FakeSlack
) -> None:
    slack = fake_slack
    slack.admins.add("UADMIN")
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False}, limits={"messages_per_minute": 0})
    async with make_app(settings) as app:
        await slack.send_event(channel_message("before listening", "1700000090.000100"))
        lookups = len(slack.calls_to("users.info"))
        await slack.send_command("/listen", "on", user="U1", channel="C1")
        assert (await until_ephemeral(slack, "U1"))[0] == "Only admins can use /listen on."
        await slack.send_command("/listen", "on", user="UADMIN", channel="C1")
        await wait_until(lambda: any("Listen mode on" in p.text for p in slack.posted("C1")), what="listen on")
        await slack.send_event(channel_message("the cake is in the fridge", "1700000091.000100"))
        await slack.send_event(channel_message("[name-U2]: no, it is gone", "1700000092.000100", user="U3"))
        await wait_until(lambda: len(heard_rows(app)) == 2, what="two kept messages")
        ts = "1700000093.000100"
        await slack.send_event(channel_message("<@UBOT> where is the cake?", ts, user="U1"))
        await answered(app.store, ConversationKey("slack", "C1", ts, None))
        prompt = scripted_engine(app).prompts[-1]
    assert lookups == 0  # chatter in a channel that does not listen costs no users.info call
    assert prompt[-1].content.endswith(
        "\n[name-U2]: the cake is in the fridge"
        "\n[name-U3]: \\[name-U2]: no, it is gone"
        "\n\n[name-U1]: where is the cake?"
    )
    assert [text for _, _, text in heard_rows(app)] == ["the cake is in the fridge", "[name-U2]: no, it is gone"]
    assert (
        len([p for p in slack.posted("C1", any_thread=True) if p.text.startswith("You said")]) == 1
    )  # chatter is not answered
