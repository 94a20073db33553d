"""GET /metrics: the Prometheus text format, moving as replies, refusals and 429s happen."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.app import Parley
from bot.conversation import CommandRequest, IncomingMessage
from tests.conftest import MakeSettings
from tests.support import ScriptedEngine, long_story, make_app, wait_idle, wait_until
from tests.test_streamer import roomy


async def scrape(app: Parley, key: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, by name and labels."""
    assert app.web is not None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as http, http.get(app.web.url + "/metrics", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def dm(text: str, message_id: str, user: str = "u1") -> IncomingMessage:
    return IncomingMessage("recording", f"dm-{user}", user, message_id, text, is_direct=True)


async def test_counters_and_histograms_move_with_a_multi_user_run(make_settings: MakeSettings) -> None:
    settings = make_settings(limits={"messages_per_minute": 1, "burst": 2}, engine={"max_tokens": 40})
    engine = ScriptedEngine(long_story, delay=0.01)
    async with make_app(settings, engine) as app:
        before = await scrape(app)
        assert value(before, "parley_replies_total", platform="recording", outcome="complete") == 0
        connector = roomy()
        connector.rate_limits = [0.05]  # the platform answers one edit with 429
        for user in ("u1", "u2", "u3"):
            app.chat.submit(dm("hello", f"{user}-1", user), connector)
        app.chat.submit(dm("again", "u1-2"), connector)
        app.chat.submit(dm("and again", "u1-3"), connector)  # u1 is over their limit
        await wait_until(lambda: engine.busy > 0, what="a reply generating")
        during = await scrape(app)
        assert value(during, "parley_engine_busy_sequences") >= 1
        await wait_idle(app)

        app.chat.submit(IncomingMessage("recording", "dm-u4", "u4", "u4-1", "tell me", is_direct=True), connector)
        await wait_until(lambda: any(e.text for e in app.chat.running.values()), what="the last reply streaming")
        replies: list[str] = []

        class Collect:
            async def text(self, text: str, *, ephemeral: bool = False) -> None:
                replies.append(text)

            async def stream(self, exchange: object) -> str:
                raise AssertionError

        await app.chat.commands.run(CommandRequest("recording", "dm-u4", "u4", "stop", is_direct=True), Collect())
        await wait_idle(app)
        after = await scrape(app)

    assert replies == ["Stopped."]
    assert value(after, "parley_replies_total", platform="recording", outcome="complete") == 4
    assert value(after, "parley_replies_total", platform="recording", outcome="stopped") == 1
    assert value(after, "parley_time_to_first_token_seconds_count", platform="recording") == 5
    assert value(after, "parley_reply_seconds_count", platform="recording") == 5
    assert value(after, "parley_reply_seconds_sum", platform="recording") > 0
    assert value(after, "parley_tokens_total", kind="generated") >= 4 * 40
    assert value(after, "parley_tokens_total", kind="prompt") > 0
    assert value(after, "parley_platform_rate_limited_total", platform="recording", method="edit") == 1
    calls = value(after, "parley_platform_calls_total", platform="recording", method="edit")
    # Every call the platform saw, the refused one included.
    assert calls == len([c for c in connector.calls + connector.rejected if c.kind == "edit"])
    # The limited user's note is one send besides the five placeholders.
    assert value(after, "parley_platform_calls_total", platform="recording", method="send") == 6
    assert value(after, "parley_edits_per_reply_count", platform="recording") == 5
    assert value(after, "parley_limits_refused_total", platform="recording") == 1
    assert value(after, "parley_inbox_depth") == 0
    assert value(after, "parley_active_conversations") == 0


async def test_metrics_need_a_key_when_keys_are_set(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"api_keys": ["k-one"]})) as app:
        assert app.web is not None
        async with aiohttp.ClientSession() as http, http.get(app.web.url + "/metrics") as response:
            assert response.status == 401
        assert value(await scrape(app, "k-one"), "parley_inbox_depth") == 0


async def test_plugins_add_their_own_metrics(make_settings: MakeSettings) -> None:
    async with make_app(make_settings()) as app:
        counter = app.metrics.counter("parley_plugin_dice_rolls", "Dice rolled", ["sides"])
        counter.labels("6").inc(2)
        assert app.metrics.counter("parley_plugin_dice_rolls", "Dice rolled", ["sides"]) is counter
        assert value(await scrape(app), "parley_plugin_dice_rolls_total", sides="6") == 2


async def test_the_real_model_engine_reports_its_figures(make_settings: MakeSettings) -> None:
    from bot.engine import ChatMessage, GenerationParams
    from engine.local import LocalEngine

    settings = make_settings(engine={"parallel": 2, "max_tokens": 8})
    engine = LocalEngine(settings.engine)
    await engine.start()
    try:
        messages = [ChatMessage("user", "Say hi.")]
        await engine.generate(messages, GenerationParams(max_tokens=8, temperature=0), affinity="c1").text()
        first = engine.metrics()
        again = engine.generate(
            [*messages, ChatMessage("assistant", "Hi!"), ChatMessage("user", "Again.")],
            GenerationParams(max_tokens=8, temperature=0),
            affinity="c1",
        )
        await again.text()
        second = engine.metrics()
    finally:
        await engine.stop()
    assert first["queue_wait_count"] == 1
    assert first["queue_wait_seconds_sum"] >= 0
    assert first["busy_sequences"] == 0
    assert (first["kv_cache_misses"], first["kv_cache_hits"]) == (1, 0)
    assert (second["kv_cache_misses"], second["kv_cache_hits"]) == (1, 1)
    # The second turn read only what the first had not, a small part of its whole prompt.
    decoded = second["prompt_tokens_decoded"] - first["prompt_tokens_decoded"]
    assert 0 < decoded < again.usage.prompt_tokens / 2
