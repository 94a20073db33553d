"""The chat page in headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Sequence

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from bot.engine import ChatMessage
from bot.errors import EngineError
from bot.store import TurnStatus
from tests.conftest import MakeSettings
from tests.support import ScriptedEngine, echo, long_story, make_app, scripted_engine, wait_until

CHROMIUM = shutil.which("chromium")
# `make test` installs Chromium; outside CI a machine without it skips rather than fails.
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed")

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM is not None, "chromium is missing: `make test` installs it"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        await browser.close()


async def send(page: Page, text: str) -> None:
    await page.fill("#message", text)
    await page.press("#message", "Enter")


async def screenshot(page: Page, name: str) -> None:
    """Save ``$SCREENSHOTS/<name>.png`` when ``SCREENSHOTS`` names a folder, to look at the page."""
    if folder := os.environ.get("SCREENSHOTS"):
        await page.screenshot(path=os.path.join(folder, f"{name}.png"))


async def test_chat_page_streams_keeps_history_and_shows_errors(make_settings: MakeSettings, browser: Browser) -> None:
    settings = make_settings(engine={"max_tokens": 40}, web={"max_message_chars": 200})
    async with make_app(settings, ScriptedEngine(long_story, delay=0.02)) as app:
        assert app.web is not None
        page = await browser.new_page()
        await page.goto(app.web.url + "/")
        # Count how often the reply's text changes while it streams.
        await page.evaluate(
            """() => { window.updates = 0; new MutationObserver(() => window.updates++)
                 .observe(document.getElementById('log'), {subtree: true, characterData: true, childList: true}); }"""
        )
        await send(page, "Say hello to the browser.")
        reply = page.locator(".turn.assistant").first
        await expect(page.locator(".turn.user").first).to_have_text("Say hello to the browser.")
        # The user's turn shows before the answer's headers arrive and the reply's turn is added:
        # wait for that turn to exist, then for it to finish streaming.
        await expect(reply).to_have_count(1)
        await expect(reply).not_to_have_class(re.compile(r"\bstreaming\b"), timeout=60_000)
        text = await reply.text_content()
        assert text
        assert text.strip()
        assert await page.evaluate("window.updates") > 3, "the reply grew in steps"

        turns = await app.store.db.execute_fetchall("SELECT role, text FROM turns ORDER BY id")
        # The page shows the reply as Markdown: a paragraph, its whitespace trimmed.
        assert [(role, " ".join(words.split())) for role, words in turns] == [
            ("user", "Say hello to the browser."),
            ("assistant", " ".join(text.split())),
        ]

        # The conversation is still there after a reload.
        await page.reload()
        await expect(page.locator(".turn")).to_have_count(2)
        await expect(page.locator(".turn.assistant").first).to_have_text(text)

        # An error is shown, and the unsent text stays in the box.
        too_long = "x" * 250
        await send(page, too_long)
        await expect(page.locator("#error")).to_contain_text("the limit is 200")
        await expect(page.locator("#message")).to_have_value(too_long)
        await expect(page.locator(".turn")).to_have_count(2)
        await screenshot(page, "error")

        # Commands work in the page too.
        await page.fill("#message", "")
        await send(page, "/ping")
        await expect(page.locator(".turn.assistant").last).to_contain_text("pong")

        # A new conversation starts empty.
        await page.click("#new")
        await expect(page.locator(".turn")).to_have_count(0)


MARKDOWN = """Here is **the plan**, with `inline code` and a [link](https://example.com/docs):

```python
print(1)
```

- a
- b <img src=x onerror="window.pwned=1">
- <script>window.pwned=1</script>

[bad](javascript:window.pwned=1) and ![pic](https://example.com/track.png)
"""
XSS = '<img src=x onerror="window.pwned=1"> <script>window.pwned=1</script>'


def markdown_then_echo(messages: Sequence[ChatMessage]) -> str:
    return MARKDOWN + "\nYou said: " + echo(messages).removeprefix("You said: ")


async def test_replies_are_markdown_and_html_in_them_stays_text(make_settings: MakeSettings, browser: Browser) -> None:
    settings = make_settings(engine={"max_tokens": 200})
    async with make_app(settings, ScriptedEngine(markdown_then_echo, delay=0.01)) as app:
        assert app.web is not None
        context = await browser.new_context(viewport={"width": 1100, "height": 760})
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app.web.url)
        page = await context.new_page()
        await page.goto(app.web.url + "/")
        await send(page, "Show me " + XSS)
        reply = page.locator(".turn.assistant").first
        # Markdown while it streams: the code block is there before the reply ends.
        await expect(reply.locator("pre > code.language-python")).to_have_text("print(1)")
        await expect(page.locator(".turn.assistant.streaming")).to_have_count(0, timeout=30_000)

        async def check() -> None:
            await expect(reply.locator("pre > code")).to_have_text("print(1)")
            await expect(reply.locator("ul > li")).to_have_count(3)
            await expect(reply.locator("strong")).to_have_text("the plan")
            await expect(reply.locator("p > code")).to_have_text("inline code")
            # The javascript: link stays text; the image is not loaded, its address is a plain link.
            links = await reply.locator("a").evaluate_all("(all) => all.map((a) => [a.href, a.rel, a.target])")
            assert links == [
                ["https://example.com/docs", "noopener noreferrer", "_blank"],
                ["https://example.com/track.png", "noopener noreferrer", "_blank"],
            ]
            await expect(reply).to_contain_text('b <img src=x onerror="window.pwned=1">')
            await expect(reply).to_contain_text("<script>window.pwned=1</script>")
            await expect(reply).to_contain_text("You said: Show me " + XSS)
            await expect(reply).to_contain_text("[bad](javascript:window.pwned=1)")
            await expect(page.locator(".turn.user").first).to_have_text("Show me " + XSS)
            assert await page.locator("#log img, #log script, #log [onerror]").count() == 0
            assert await page.evaluate("typeof window.pwned") == "undefined"

        await check()
        await screenshot(page, "markdown")
        await reply.locator(".copy").click()
        await expect(reply.locator(".copy")).to_have_text("Copied")
        assert await page.evaluate("navigator.clipboard.readText()") == "print(1)\n"

        await page.reload()  # the history is rendered the same way
        await check()
        await page.emulate_media(color_scheme="dark")
        await page.set_viewport_size({"width": 390, "height": 760})
        await expect(page.locator("#sidebar")).not_to_be_in_viewport()  # a phone: the list folds away
        await screenshot(page, "markdown-dark-narrow")
        await page.click("#menu")
        await expect(page.locator("#menu")).to_have_attribute("aria-expanded", "true")
        await expect(page.locator("#sidebar")).to_be_in_viewport(ratio=1)
        await screenshot(page, "markdown-dark-narrow-list")
        await context.close()


async def test_stop_ends_the_reply_and_keeps_what_was_written(make_settings: MakeSettings, browser: Browser) -> None:
    settings = make_settings(engine={"max_tokens": 1500})
    async with make_app(settings, ScriptedEngine(long_story, delay=0.01)) as app:
        assert app.web is not None
        page = await browser.new_page()
        await page.goto(app.web.url + "/")
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.post_data or "") if request.method == "POST" else None)
        await send(page, "Tell me a very long story.")
        reply = page.locator(".turn.assistant").first
        await expect(reply).to_contain_text("word20")
        await expect(page.locator("#send")).to_be_hidden()
        await screenshot(page, "streaming")
        await page.click("#stop")
        await expect(reply).to_have_class(re.compile(r"\bstopped\b"))
        await expect(reply.locator(".note")).to_have_text("(stopped)")
        await expect(page.locator("#stop")).to_be_hidden()
        await expect(page.locator("#send")).to_be_visible()
        shown = await reply.locator(".content").text_content()
        assert shown
        await asyncio.sleep(0.5)
        assert await reply.locator(".content").text_content() == shown, "the reply no longer grows"
        assert "word1499" not in shown
        await screenshot(page, "stopped")

        async def ended() -> tuple[str, str] | None:
            rows = await app.store.db.execute_fetchall("SELECT status, text FROM turns WHERE role = 'assistant'")
            status, text = next(iter(rows))
            return None if status == TurnStatus.STREAMING else (status, text)

        for _ in range(100):
            if stored := await ended():
                break
            await asyncio.sleep(0.05)
        assert stored is not None
        assert stored[0] == TurnStatus.STOPPED
        assert stored[1].split() == shown.split()
        assert not app.chat.running, "the engine is free"
        assert [json.loads(body)["message"] for body in asked] == ["Tell me a very long story.", "/stop"]
        await expect(page.locator("#error")).to_be_empty()  # it ended by /stop, not by hanging up

        # The page can ask again at once, in the same conversation.
        await send(page, "/ping")
        await expect(page.locator(".turn.assistant").last).to_contain_text("pong")


async def test_a_past_conversation_reopens_from_the_list(make_settings: MakeSettings, browser: Browser) -> None:
    async with make_app(make_settings()) as app:
        assert app.web is not None
        page = await browser.new_page()
        await page.goto(app.web.url + "/")
        items = page.locator("#conversations button")
        await send(page, "First topic")
        await expect(page.locator(".turn.assistant").first).to_have_text("You said: First topic")
        await expect(items).to_have_count(1)
        await page.click("#new")
        await expect(page.locator(".turn")).to_have_count(0)
        await send(page, "Second topic")
        await expect(page.locator(".turn.assistant").first).to_have_text("You said: Second topic")
        await expect(items.locator(".title")).to_have_text(["Second topic", "First topic"])  # newest first
        await expect(items.first).to_have_attribute("aria-current", "true")

        await items.nth(1).click()
        await expect(page.locator(".turn")).to_have_count(2)
        await expect(page.locator(".turn.user")).to_have_text(["First topic"])
        await expect(page.locator(".turn.assistant")).to_have_text(["You said: First topic"])
        await expect(items.nth(1)).to_have_attribute("aria-current", "true")
        await send(page, "More on it")
        await expect(page.locator(".turn.assistant").last).to_have_text("You said: More on it")
        await expect(items.locator(".title")).to_have_text(["First topic", "Second topic"])
        await expect(items.first.locator(".meta")).to_contain_text("4 turns")
        await screenshot(page, "conversations")

        rows = await app.store.db.execute_fetchall(
            "SELECT c.id, COUNT(t.id) FROM conversations c JOIN turns t ON t.conversation_id = c.id GROUP BY c.id"
        )
        assert sorted(count for _, count in rows) == [2, 4], "the follow-up went to the reopened conversation"

        await page.reload()  # the reopened conversation is the one shown after a reload
        await expect(page.locator(".turn.user")).to_have_text(["First topic", "More on it"])


async def test_a_reply_refused_before_its_first_word_gives_the_text_back(
    make_settings: MakeSettings, browser: Browser
) -> None:
    """The API answers such a refusal with an HTTP error: the page shows it and puts the message
    back in the box, to send again."""
    engine = ScriptedEngine()
    async with make_app(make_settings(), engine) as app:
        assert app.web is not None
        page = await browser.new_page()
        await page.goto(app.web.url + "/")
        engine.fail = EngineError("the model fell over")
        await send(page, "Hello?")
        await expect(page.locator("#error")).to_have_text("The model could not answer just now. Please try again.")
        await expect(page.locator("#message")).to_have_value("Hello?")
        await expect(page.locator(".turn")).to_have_count(0)
        await expect(page.locator("#send")).to_be_visible()


async def test_a_reply_that_fails_midway_is_marked_and_the_error_shown(
    make_settings: MakeSettings, browser: Browser
) -> None:
    engine = ScriptedEngine(long_story, delay=0.02)
    async with make_app(make_settings(engine={"max_tokens": 400}), engine) as app:
        assert app.web is not None
        page = await browser.new_page()
        await page.goto(app.web.url + "/")
        engine.fail, engine.fail_after = EngineError("the model fell over"), 5
        await send(page, "Hello?")
        await expect(page.locator("#error")).to_have_text("The model could not answer just now. Please try again.")
        await expect(page.locator(".turn.assistant .note")).to_have_text("(failed)")
        await expect(page.locator("#send")).to_be_visible()


async def test_stop_before_the_first_word_hangs_up(make_settings: MakeSettings, browser: Browser) -> None:
    async with make_app(make_settings(), ScriptedEngine(long_story, delay=0.5)) as app:
        assert app.web is not None
        page = await browser.new_page()
        await page.goto(app.web.url + "/")
        await send(page, "Take your time.")
        await page.locator("#stop").click()  # no conversation id yet: the page can only hang up
        await expect(page.locator(".turn.assistant .note")).to_have_text("(stopped)")
        await expect(page.locator("#error")).to_be_empty()
        for _ in range(100):
            rows = await app.store.db.execute_fetchall("SELECT status FROM turns WHERE role = 'assistant'")
            if rows and next(iter(rows))[0] != TurnStatus.STREAMING:
                break
            await asyncio.sleep(0.05)
        assert [status for (status,) in rows] == [TurnStatus.STOPPED]


async def test_without_the_renderer_replies_are_plain_text(make_settings: MakeSettings, browser: Browser) -> None:
    async with make_app(make_settings(engine={"max_tokens": 200}), ScriptedEngine(markdown_then_echo)) as app:
        assert app.web is not None
        page = await browser.new_page()
        await page.route("**/vendor/**", lambda route: route.abort())
        await page.goto(app.web.url + "/")
        await expect(page.locator("#error")).to_contain_text("replies are shown as plain text")
        await send(page, "Show me " + XSS)
        reply = page.locator(".turn.assistant .content.plain")
        await expect(reply).to_contain_text("```python\nprint(1)\n```")
        await expect(reply).to_contain_text("You said: Show me " + XSS)
        assert await page.locator("#log img, #log script, #log pre").count() == 0
        assert await page.evaluate("typeof window.pwned") == "undefined"


async def test_a_reply_waiting_for_the_engine_shows_its_place_in_line(
    make_settings: MakeSettings, browser: Browser
) -> None:
    def answer(messages: Sequence[ChatMessage]) -> str:
        # The first reply holds the one place until the test hangs up on it (2000 words, 100 s);
        # the page's own reply is short.
        return long_story(messages) if messages[-1].content == "me first" else echo(messages)

    settings = make_settings(engine={"max_tokens": 2000}, queue_notice_after=0.1)
    async with make_app(settings, ScriptedEngine(answer, delay=0.05, places=1)) as app:
        assert app.web is not None
        async with aiohttp.ClientSession() as http:

            async def first() -> None:
                async with http.post(app.web.url + "/api/chat", json={"message": "me first"}) as response:
                    await response.read()

            ahead = asyncio.create_task(first())
            await wait_until(lambda: scripted_engine(app).busy == 1, what="the first reply to hold the place")
            page = await browser.new_page()
            await page.goto(app.web.url + "/")
            await send(page, "And me?")
            reply = page.locator(".turn.assistant").first
            await expect(reply.locator(".note.queue")).to_have_text("Waiting for the model: you are next.")
            await screenshot(page, "queued")
            ahead.cancel()  # the first client hangs up: its reply stops and frees the place
            with contextlib.suppress(asyncio.CancelledError):
                await ahead
            await expect(reply).to_contain_text("You said: And me?", timeout=30_000)
            await expect(reply.locator(".note.queue")).to_have_count(0)
            await expect(page.locator(".turn.assistant.streaming")).to_have_count(0, timeout=30_000)
