"""The local llama.cpp engine on the bundled model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.errors import ContextOverflow, EngineBusy
from engine.base import ChatMessage, GenerationParams
from engine.bundled import bundled_model_path
from engine.local import LocalEngine, LocalEngineConfig

GREEDY = GenerationParams(max_tokens=24, temperature=0.0, seed=42)
HELLO = [ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello.")]


def config(**overrides: object) -> LocalEngineConfig:
    path = bundled_model_path()
    assert path is not None, "the bundled model is installed by `make`"
    return LocalEngineConfig(**({"model_path": path, "n_ctx": 1024, "threads": 2, "seed": 42} | overrides))  # type: ignore[arg-type]


@pytest.fixture
async def engine() -> AsyncIterator[LocalEngine]:
    engine = LocalEngine(config())
    await engine.start()
    yield engine
    await engine.stop()


async def test_greedy_generation_is_deterministic_and_counted(engine: LocalEngine) -> None:
    first = engine.generate(HELLO, GREEDY)
    text = await first.text()
    assert text.strip()
    assert first.usage.prompt_tokens == await engine.count_tokens(HELLO)
    assert 0 < first.usage.completion_tokens <= GREEDY.max_tokens
    assert first.usage.finish_reason in {"stop", "length"}
    # Same model, same prompt, same (empty) cache: the same text. (A warm prompt cache may change
    # the last digits of the logits, so the comparison is between two fresh engines.)
    other = LocalEngine(config())
    await other.start()
    try:
        assert await other.generate(HELLO, GREEDY).text() == text
    finally:
        await other.stop()


async def test_history_is_trimmed_oldest_first_keeping_the_system_prompt() -> None:
    engine = LocalEngine(config(n_ctx=512))
    await engine.start()
    try:
        history: list[ChatMessage] = [ChatMessage("system", "You are a helpful assistant named Parley.")]
        for i in range(12):
            history.append(ChatMessage("user", f"Question {i}: " + "tell me about rivers and lakes " * 6))
            history.append(ChatMessage("assistant", f"Answer {i}: " + "rivers flow into lakes and seas " * 6))
        history.append(ChatMessage("user", "Thanks!"))
        params = GenerationParams(max_tokens=32, temperature=0.0, seed=42)
        reply = engine.generate(history, params)
        await reply.text()
        usage = reply.usage
        assert usage.dropped_messages > 0
        assert usage.prompt_tokens <= 512 - 32
        assert usage.prompt_tokens >= await engine.count_tokens([history[0], history[-1]])
    finally:
        await engine.stop()


async def test_a_message_that_cannot_fit_alone_is_a_clear_error(engine: LocalEngine) -> None:
    huge = [ChatMessage("user", "word " * 3000)]
    with pytest.raises(ContextOverflow, match="does not fit"):
        await engine.generate(huge, GREEDY).text()
    # The engine still answers afterwards.
    assert (await engine.generate(HELLO, GREEDY).text()).strip()


async def test_cancel_stops_within_a_token_or_two_and_frees_the_slot(engine: LocalEngine) -> None:
    long = GenerationParams(max_tokens=400, temperature=0.0, seed=42)
    story = [ChatMessage("user", "Write a long story about a dragon.")]
    reply = engine.generate(story, long)
    received = 0
    after_cancel = 0
    async for _ in reply:
        if reply.cancelled:
            after_cancel += 1
        received += 1
        if received == 5:
            reply.cancel()
    assert after_cancel <= 2
    assert reply.usage.finish_reason == "cancelled"
    assert reply.usage.completion_tokens < 20
    # The single slot is free again at once.
    assert (await asyncio.wait_for(engine.generate(HELLO, GREEDY).text(), 120)).strip()


async def test_cancelling_the_consumer_task_frees_the_slot(engine: LocalEngine) -> None:
    long = GenerationParams(max_tokens=400, temperature=0.0, seed=42)
    started = asyncio.Event()

    async def consume() -> None:
        async with engine.generate([ChatMessage("user", "Count to one thousand.")], long) as reply:
            async for _ in reply:
                started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await asyncio.wait_for(engine.generate(HELLO, GREEDY).text(), 120)).strip()


async def test_the_semaphore_bounds_concurrent_generations() -> None:
    engine = LocalEngine(config(queue_timeout=0.3))
    await engine.start()
    try:
        long = GenerationParams(max_tokens=200, temperature=0.0, seed=42)
        busy = engine.generate([ChatMessage("user", "Write a long poem about the sea.")], long)
        iterator = aiter(busy)
        await anext(iterator)  # the only slot is now taken
        with pytest.raises(EngineBusy):
            await engine.generate(HELLO, GREEDY).text()
        busy.cancel()
        async for _ in iterator:
            pass
        assert (await engine.generate(HELLO, GREEDY).text()).strip()
    finally:
        await engine.stop()


async def test_two_slots_generate_side_by_side() -> None:
    engine = LocalEngine(config(concurrency=2, queue_timeout=0.5, threads=1))
    await engine.start()
    try:
        long = GenerationParams(max_tokens=60, temperature=0.0, seed=42)
        first = engine.generate([ChatMessage("user", "Write a poem about the sea.")], long)
        iterator = aiter(first)
        await anext(iterator)  # one slot busy
        # The first reply holds its slot until it is consumed; the second slot answers meanwhile
        # (with one slot this would raise EngineBusy after queue_timeout).
        assert (await engine.generate(HELLO, GREEDY).text()).strip()
        async for _ in iterator:
            pass
        assert first.usage.finish_reason in {"stop", "length"}
    finally:
        await engine.stop()


async def test_a_long_history_is_trimmed_in_one_pass() -> None:
    """Hundreds of turns: the cut is found from per-message counts, and the newest turns are kept."""
    engine = LocalEngine(config(n_ctx=512))
    await engine.start()
    try:
        history = [ChatMessage("system", "Be brief.")]
        for i in range(300):
            history += [ChatMessage("user", f"note {i}: apples"), ChatMessage("assistant", f"noted {i}")]
        history.append(ChatMessage("user", "Which note came last?"))
        reply = engine.generate(history, GenerationParams(max_tokens=16, temperature=0.0, seed=42))
        await reply.text()
        usage = reply.usage
        assert 500 < usage.dropped_messages < 601  # about ten tokens a message; ~45 newest kept
        assert 512 - 16 - 40 <= usage.prompt_tokens <= 512 - 16
    finally:
        await engine.stop()
