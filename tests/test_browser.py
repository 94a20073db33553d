"""The chat page in headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import MakeSettings
from tests.support import ScriptedEngine, long_story, make_app

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
        await expect(page.locator(".turn.assistant.streaming")).to_have_count(0, timeout=60_000)
        text = await reply.text_content()
        assert text
        assert text.strip()
        assert await page.evaluate("window.updates") > 3, "the reply grew in steps"

        turns = await app.store.db.execute_fetchall("SELECT role, text FROM turns ORDER BY id")
        assert list(turns) == [("user", "Say hello to the browser."), ("assistant", text)]

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
        if shot := os.environ.get("SCREENSHOT"):
            await page.screenshot(path=shot)

        # Commands work in the page too.
        await page.fill("#message", "")
        await send(page, "/ping")
        await expect(page.locator(".turn.assistant").last).to_contain_text("pong")

        # A new conversation starts empty.
        await page.click("#new")
        await expect(page.locator(".turn")).to_have_count(0)
