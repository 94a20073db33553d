"""Images for a vision model on the OpenAI-compatible backend, against the wire-level fake that records requests."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.conversation import ConversationKey
from bot.engine import ChatMessage, GenerationParams, Image
from tests.conftest import MakeSettings
from tests.connectors.test_telegram import PRIVATE, answered, settings_for
from tests.fakes.telegram import FakeTelegram
from tests.files import JPEG, tiny_png
from tests.support import make_app
from tests.test_engine_openai import FakeServer, started


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer("llama.cpp")
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"  # type: ignore[union-attr]
    yield fake
    await runner.cleanup()


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def test_images_go_as_image_url_content_parts_after_the_text(server: FakeServer) -> None:
    engine = await started(server, vision=True)
    png = tiny_png()
    try:
        assert engine.accepts_images
        messages = [
            ChatMessage("system", "You describe pictures."),
            ChatMessage("user", "earlier", images=(Image("image/png", b"old"),)),
            ChatMessage("assistant", "ok"),
            ChatMessage("user", "what is this?", images=(Image("image/png", png), Image("image/jpeg", JPEG))),
        ]
        assert await engine.generate(messages, GenerationParams(max_tokens=8)).text() == "Hi there"
    finally:
        await engine.stop()
    [sent] = server.chats()
    assert sent[0] == {"role": "system", "content": "You describe pictures."}
    assert sent[-1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": data_url("image/png", png)}},
            {"type": "image_url", "image_url": {"url": data_url("image/jpeg", JPEG)}},
        ],
    }


async def test_without_vision_the_engine_says_so_and_sends_text_only(server: FakeServer) -> None:
    engine = await started(server)
    try:
        assert not engine.accepts_images
        message = ChatMessage("user", "what is this?", images=(Image("image/png", tiny_png()),))
        await engine.generate([message], GenerationParams(max_tokens=8)).text()
    finally:
        await engine.stop()
    assert server.chats() == [[{"role": "user", "content": "what is this?"}]]


async def test_a_telegram_photo_reaches_a_vision_model_as_an_image_part(
    make_settings: MakeSettings, server: FakeServer
) -> None:
    engine = {"backend": "openai", "base_url": server.url, "model": "fake", "vision": True}
    key = ConversationKey("telegram", str(PRIVATE.id), None, "42")
    async with FakeTelegram() as fake, make_app(settings_for(make_settings, fake, **engine), real_engine=True) as app:
        sent = fake.push(PRIVATE, "what is in the picture?", photo=JPEG)
        turn, replies = await answered(app.store, fake, key, PRIVATE, sent)
        stored = await app.store.turns(await app.store.conversation(key))
    [request] = server.chats()
    assert request[-1]["content"] == [
        {
            "type": "text",
            "text": 'what is in the picture?\n\nAttached image "photo.jpg": shown to the model with this message only.',
        },
        {"type": "image_url", "image_url": {"url": data_url("image/jpeg", JPEG)}},  # the largest size
    ]
    assert [m.text for m in replies] == ["Hi there"]  # no "can't see" note
    assert turn.text == "Hi there"
    assert "base64" not in stored[0].text  # the image is not kept in the history
