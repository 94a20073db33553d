"""Attachments on Discord: the real discord.py against the fake, files read with ``Attachment.read`` from its CDN."""

from __future__ import annotations

from bot.attachments import NO_VISION
from bot.conversation import ConversationKey
from tests.conftest import MakeSettings
from tests.connectors.test_discord import discord_settings, user_texts
from tests.fakes.discord import FakeDiscord
from tests.files import tiny_pdf, tiny_png
from tests.support import make_app, scripted_engine, wait_idle, wait_reply, wait_until

DM = ConversationKey("discord", str(9_000_000 + 1001), None, "1001")


def bot_posts(fake: FakeDiscord, channel: str) -> list[str]:
    return [
        str(m["content"])
        for m in fake.messages.values()
        if m["channel_id"] == channel and m["author"]["id"] == fake.bot["id"]
    ]


async def test_a_text_file_and_a_pdf_are_read_into_the_turn(
    fake_discord: FakeDiscord, make_settings: MakeSettings
) -> None:
    fake = fake_discord
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False})
    source = b"def answer():\n    return 42\n"
    pdf = tiny_pdf("Release date: 3 March")
    async with make_app(settings) as app:
        await fake.user_says(
            "what do these say?",
            files=[("answer.py", "text/x-python; charset=utf-8", source), ("notes.pdf", "application/pdf", pdf)],
        )
        await wait_reply(app.store, DM)
        engine = scripted_engine(app)
    assert user_texts(engine) == [
        'what do these say?\n\nAttached file "answer.py" (text/x-python):\n```\ndef answer():\n    return 42\n\n```'
        '\n\nAttached file "notes.pdf" (application/pdf, 1 page):\n```\nRelease date: 3 March\n```'
    ]
    assert len(fake.downloads) == 2


async def test_an_image_to_a_text_only_model_gets_one_line(
    fake_discord: FakeDiscord, make_settings: MakeSettings
) -> None:
    fake = fake_discord
    settings = make_settings(discord=discord_settings(fake), web={"enabled": False})
    async with make_app(settings) as app:
        await fake.user_says("", files=[("chart.png", "image/png", tiny_png())])
        await wait_until(lambda: bot_posts(fake, DM.channel), what="the note")
        await wait_idle(app)
        await fake.user_says("and this one?", files=[("chart.png", "image/png", tiny_png())])
        await wait_reply(app.store, DM)
        engine = scripted_engine(app)
    note = f"{NO_VISION} (not seen: chart.png)."
    assert bot_posts(fake, DM.channel) == [note, note, "You said: and this one?"]
    assert len(engine.prompts) == 1
    assert user_texts(engine) == ["and this one?"]
    assert fake.downloads == []
