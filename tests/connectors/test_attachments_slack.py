"""Attachments on Slack: slack_bolt against the fake, files fetched from ``url_private_download`` with the bot token."""

from __future__ import annotations

from bot.attachments import NO_VISION
from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_slack import answered, dm, socket_settings
from tests.fakes.slack import FakeSlack
from tests.files import tiny_pdf, tiny_png
from tests.support import make_app, scripted_engine, wait_idle, wait_until

DM = ConversationKey("slack", "D1", None, "U1")


async def test_a_text_file_and_a_pdf_are_read_into_the_turn(make_settings: MakeSettings, fake_slack: FakeSlack) -> None:
    slack = fake_slack
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False})
    notes = slack.file("todo.md", "text/markdown", b"- buy milk\n- call Bob\n", filetype="markdown")
    pdf = slack.file("invoice.pdf", "application/pdf", tiny_pdf("Total due: 120 EUR"), filetype="pdf")
    async with make_app(settings) as app:
        await slack.send_event(dm("what is on my list?", "1700000100.000100", subtype="file_share", files=[notes]))
        await answered(app.store, DM)
        first = scripted_engine(app).prompts[-1][-1].content
        await slack.send_event(dm("", "1700000101.000100", subtype="file_share", files=[pdf]))
        await answered(app.store, DM, replies=2)
        second = scripted_engine(app).prompts[-1][-1].content
    assert (
        first == 'what is on my list?\n\nAttached file "todo.md" (text/markdown):\n```\n- buy milk\n- call Bob\n\n```'
    )
    assert second == 'Attached file "invoice.pdf" (application/pdf, 1 page):\n```\nTotal due: 120 EUR\n```'
    assert slack.downloads == [notes["id"], pdf["id"]]


async def test_an_image_to_a_text_only_model_gets_one_line(make_settings: MakeSettings, fake_slack: FakeSlack) -> None:
    slack = fake_slack
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False})
    image = slack.file("screenshot.png", "image/png", tiny_png(), filetype="png")
    async with make_app(settings) as app:
        await slack.send_event(dm("", "1700000200.000100", subtype="file_share", files=[image]))
        await wait_until(lambda: slack.posted("D1"), what="the note")
        await wait_idle(app)
        engine = scripted_engine(app)
    assert [m.text for m in slack.posted("D1")] == [f"{NO_VISION} (not seen: screenshot.png)."]
    assert engine.prompts == []
    assert slack.downloads == []


async def test_the_bot_token_goes_only_to_slacks_file_host(make_settings: MakeSettings, fake_slack: FakeSlack) -> None:
    slack = fake_slack
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False})
    elsewhere = slack.file("x.txt", "text/plain", b"secret") | {
        "url_private_download": "http://127.0.0.2:9/files-pri/T1-F1/download/x.txt"
    }
    async with make_app(settings) as app:
        await slack.send_event(dm("read it", "1700000300.000100", subtype="file_share", files=[elsewhere]))
        turns = await answered(app.store, DM)
    assert [m.text for m in slack.posted("D1")] == [
        "📎 x.txt was not read: the download failed.",
        "You said: read it",
    ]
    assert turns[0].text == "read it"


async def test_a_token_without_files_read_gets_the_sign_in_page_and_a_note(
    make_settings: MakeSettings, fake_slack: FakeSlack
) -> None:
    slack = fake_slack
    slack.scopes = [scope for scope in slack.scopes if scope != "files:read"]
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False})
    notes = slack.file("notes.txt", "text/plain", b"hello")
    async with make_app(settings) as app:
        await slack.send_event(dm("read it", "1700000400.000100", subtype="file_share", files=[notes]))
        await answered(app.store, DM)
    assert [m.text for m in slack.posted("D1")] == [
        "📎 notes.txt was not read: the download failed.",
        "You said: read it",
    ]
    assert slack.downloads == []


async def test_a_file_slack_will_not_serve_is_named_as_not_read(
    make_settings: MakeSettings, fake_slack: FakeSlack
) -> None:
    slack = fake_slack
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False})
    hidden = {"id": "F9", "name": "old.txt", "mimetype": "text/plain", "mode": "hidden_by_limit"}
    async with make_app(settings) as app:
        await slack.send_event(dm("", "1700000500.000100", subtype="file_share", files=[hidden]))
        await wait_until(lambda: slack.posted("D1"), what="the note")
        await wait_idle(app)
    assert [m.text for m in slack.posted("D1")] == ["📎 old.txt was not read: the download failed."]


async def test_a_download_past_the_limit_is_stopped_whatever_size_was_declared(
    make_settings: MakeSettings, fake_slack: FakeSlack
) -> None:
    slack = fake_slack
    settings = make_settings(slack=socket_settings(slack), web={"enabled": False}, attachments={"max_bytes": 1000})
    liar = slack.file("small.txt", "text/plain", b"x" * 5000) | {"size": 10}
    async with make_app(settings) as app:
        await slack.send_event(dm("read it", "1700000600.000100", subtype="file_share", files=[liar]))
        turns = await answered(app.store, DM)
    assert [m.text for m in slack.posted("D1")] == [
        "📎 small.txt was not read: it is larger than the limit of 1,000 bytes.",
        "You said: read it",
    ]
    assert turns[0].text == "read it"
