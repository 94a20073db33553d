"""The strict fakes refuse what the platforms refuse: a 429 in the platform's own shape."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import TOKEN, Chat, FakeTelegram


async def _telegram(session: aiohttp.ClientSession, fake: FakeTelegram, method: str, **params: Any) -> Any:
    async with session.post(f"{fake.url}/bot{TOKEN}/{method}", json=params) as response:
        return response.status, await response.json()


async def test_telegram_caps_the_bot_at_30_a_second_and_a_group_at_20_a_minute() -> None:
    async with FakeTelegram(min_gap=0) as fake, aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            *(_telegram(session, fake, "sendMessage", chat_id=1000 + n, text="hi") for n in range(31))
        )
        assert sorted(status for status, _ in answers) == [200] * 30 + [429]
        assert [body["parameters"] for status, body in answers if status == 429] == [{"retry_after": 1}]
        assert [c.rule for c in fake.refused("pacing")] == ["total"]
    async with FakeTelegram(min_gap=0, strict=False) as fake, aiohttp.ClientSession() as session:
        answers = [await _telegram(session, fake, "sendMessage", chat_id=-100, text="hi") for _ in range(21)]
        assert [status for status, _ in answers] == [200] * 20 + [429]
        assert [c.rule for c in fake.refused("pacing")] == ["group"]


async def test_telegram_gap_per_chat() -> None:
    async with FakeTelegram() as fake, aiohttp.ClientSession() as session:
        assert (await _telegram(session, fake, "sendMessage", chat_id=5, text="one"))[0] == 200
        assert (await _telegram(session, fake, "sendMessage", chat_id=5, text="two"))[0] == 429
        assert (await _telegram(session, fake, "sendMessage", chat_id=6, text="elsewhere"))[0] == 200
        assert [c.rule for c in fake.refused("pacing")] == ["gap"]


async def test_telegram_without_redelivery_drops_what_was_fetched() -> None:
    async with FakeTelegram(redeliver=False) as fake, aiohttp.ClientSession() as session:
        fake.push(Chat(id=5, type="private"), "hello")
        _, first = await _telegram(session, fake, "getUpdates", timeout=0)
        _, again = await _telegram(session, fake, "getUpdates", timeout=0)  # no offset: nothing confirmed
        assert [u["message"]["text"] for u in first["result"]] == ["hello"]
        assert again["result"] == []
    async with FakeTelegram() as fake, aiohttp.ClientSession() as session:  # the real Bot API keeps it
        fake.push(Chat(id=5, type="private"), "hello")
        _, first = await _telegram(session, fake, "getUpdates", timeout=0)
        _, again = await _telegram(session, fake, "getUpdates", timeout=0)
        assert first["result"] == again["result"] != []


async def test_discord_counts_every_write_to_a_channel_in_one_sliding_window() -> None:
    fake = FakeDiscord()
    await fake.start()
    try:
        headers = {"Authorization": f"Bot {fake.token}"}
        url = f"{fake.api_base}/channels/{fake.channel_id}/messages"
        async with aiohttp.ClientSession(headers=headers) as session:
            statuses, remaining = [], []
            async with session.post(url, json={"content": "first"}) as response:
                message = (await response.json())["id"]
                remaining.append(response.headers["X-RateLimit-Remaining"])
            for n in range(5):
                async with session.patch(f"{url}/{message}", json={"content": f"edit {n}"}) as response:
                    statuses.append(response.status)
                    remaining.append(response.headers.get("X-RateLimit-Remaining", "-"))
                    if response.status == 429:
                        body = await response.json()
                        assert response.headers["Via"]
                        assert 0 < body["retry_after"] <= 5
        assert statuses == [200, 200, 200, 200, 429]  # a post and four edits fill the 5 per 5 s
        assert remaining == ["4", "3", "2", "1", "0", "-"]
    finally:
        await fake.stop()


async def test_slack_allows_about_one_message_a_second_per_channel() -> None:
    async with FakeSlack() as fake, aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {fake.bot_token}"}
        statuses = []
        for channel in ("C1", "C1", "C2"):
            async with session.post(
                f"{fake.url}/api/chat.postMessage", json={"channel": channel, "text": "hi"}, headers=headers
            ) as response:
                statuses.append((response.status, response.headers.get("Retry-After")))
        assert statuses == [(200, None), (429, "1"), (200, None)]
