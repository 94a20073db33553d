"""Connectors store a message before they tell the platform it was handled.

Each test uses a sink that takes its time to store (as a loaded SQLite file would), and checks
what the platform was told meanwhile: Telegram's next ``getUpdates`` offset confirms an update
only once it is stored; Slack's ack (Socket Mode) or HTTP answer comes once it is stored, and a
message that could not be stored is answered 500, so Slack delivers it again.
"""

from __future__ import annotations

import asyncio
import time

from bot.connector import Connector
from bot.conversation import IncomingMessage
from bot.settings import SlackSettings, TelegramSettings
from connectors.slack.connector import SlackConnector
from connectors.telegram.connector import TelegramConnector
from tests.connectors.conftest import Inbox
from tests.fakes.slack import FakeSlack, post_event
from tests.fakes.telegram import TOKEN, Chat, FakeTelegram
from tests.support import wait_until

STORE_SECONDS = 0.3


class SlowInbox(Inbox):
    """Stores in ``STORE_SECONDS``; notes when each message was stored (monotonic time)."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[str, float] = {}
        self.failures = 0
        """How many next messages fail to be stored."""

    async def receive(self, message: IncomingMessage, connector: Connector) -> bool:
        await asyncio.sleep(STORE_SECONDS)
        if self.failures:
            self.failures -= 1
            raise OSError("disk I/O error")
        self.stored[message.message_id] = time.monotonic()
        return await super().receive(message, connector)


async def test_telegram_confirms_an_update_only_once_it_is_stored(fake_telegram: FakeTelegram) -> None:
    sink = SlowInbox()
    connector = TelegramConnector(TelegramSettings(token=TOKEN, base_url=fake_telegram.url, poll_timeout=1))
    pushed = [fake_telegram.push(Chat(id=40 + n, type="private"), f"message {n}", user_id=40 + n) for n in range(3)]
    update_ids = [u["update_id"] for u in fake_telegram.updates]
    await connector.start(sink)
    try:
        await wait_until(lambda: len(sink.stored) == 3, 30, what="three messages stored")
        await wait_until(lambda: fake_telegram.updates == [], 30, what="every update confirmed")
    finally:
        await connector.stop()
    polls = [c for c in fake_telegram.calls if c.method == "getUpdates" and c.refused is None]
    for update_id, message_id in zip(update_ids, pushed, strict=True):
        confirmed = next(c.at for c in polls if int(c.params.get("offset") or 0) > update_id)
        assert confirmed >= sink.stored[str(message_id)], "confirmed before it was stored"
    assert len(fake_telegram.fetched) == 3  # each fetched once


async def test_slack_acks_an_event_once_it_is_stored(fake_slack: FakeSlack) -> None:
    sink = SlowInbox()
    settings = SlackSettings(bot_token=fake_slack.bot_token, app_token=fake_slack.app_token, api_url=fake_slack.url)
    connector = SlackConnector(settings, None)
    await connector.start(sink)
    try:
        event = {"type": "message", "channel": "D1", "channel_type": "im", "user": "U1", "text": "hi", "ts": "1.5"}
        await fake_slack.send_event(event)
        assert "1.5" in sink.stored, "acknowledged before it was stored"
    finally:
        await connector.stop()


async def test_slack_over_http_answers_500_to_a_message_not_stored_and_takes_the_retry(
    fake_slack: FakeSlack,
) -> None:
    from aiohttp import web

    secret = "s3cret"
    routes = web.Application()

    class Routes:
        def add_route(self, method: str, path: str, handler: object) -> None:
            routes.router.add_route(method, path, handler)  # type: ignore[arg-type]

    sink = SlowInbox()
    sink.failures = 1
    connector = SlackConnector(
        SlackSettings(bot_token=fake_slack.bot_token, signing_secret=secret, api_url=fake_slack.url), Routes()
    )
    runner = web.AppRunner(routes, access_log=None, shutdown_timeout=0.05)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await connector.start(sink)
    try:
        url = f"http://127.0.0.1:{port}/slack/events"
        event = {"type": "message", "channel": "D1", "channel_type": "im", "user": "U1", "text": "hi", "ts": "2.5"}
        body = FakeSlack.event_body(event, "EvS1")
        status, _ = await post_event(url, body, secret)
        assert status == 500
        assert sink.stored == {}
        status, _ = await post_event(url, body, secret, retry_num=1)  # Slack's retry: same event id
        assert status == 200
        assert list(sink.stored) == ["2.5"]
        assert (await post_event(url, body, secret, retry_num=2))[0] == 200
        assert sink.messages.qsize() == 1  # taken once
    finally:
        await connector.stop()
        await runner.cleanup()
