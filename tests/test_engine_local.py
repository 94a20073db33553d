"""The local llama.cpp engine on the bundled model: the Engine contract (text, usage, trimming, errors).

Batching changes floating-point order, so nothing here expects exact text across configurations.
The scheduler's own behaviour (batching, cancelling, queueing, the KV cache) is in
``test_engine_scheduler.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.bundled import bundled_model_path
from bot.engine import TRIM_STEP, ChatMessage, GenerationParams
from bot.errors import ContextOverflow, EngineError
from bot.settings import EngineSettings
from engine.local import LocalEngine

GREEDY = GenerationParams(max_tokens=16, temperature=0.0, seed=42)
HELLO = [ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello.")]


def engine_settings(**overrides: Any) -> EngineSettings:
    path = bundled_model_path()
    assert path is not None, "the bundled model is installed by `make`"
    fields: dict[str, Any] = {"model_path": path, "n_ctx": 2048, "parallel": 4, "threads": 1, "max_tokens": 64}
    return EngineSettings(**(fields | overrides))


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LocalEngine]:
    engine = LocalEngine(engine_settings())
    await engine.start()
    yield engine
    await engine.stop()


async def test_a_reply_is_text_with_its_usage(engine: LocalEngine) -> None:
    assert engine.status() == "ready"
    assert engine.context_size == 2048
    assert engine.model_name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    reply = engine.generate(HELLO, GREEDY)
    text = await reply.text()
    assert text.strip()
    assert reply.usage.prompt_tokens == await engine.count_tokens(HELLO)
    assert 0 < reply.usage.completion_tokens <= GREEDY.max_tokens
    assert reply.usage.finish_reason in {"stop", "length"}
    assert reply.usage.seconds > 0


async def test_max_tokens_ends_with_length_and_counts_exactly(engine: LocalEngine) -> None:
    story = [ChatMessage("user", "Write a long story about a dragon.")]
    reply = engine.generate(story, GenerationParams(max_tokens=5, temperature=0.0))
    await reply.text()
    assert reply.usage.finish_reason == "length"
    assert reply.usage.completion_tokens == 5


async def test_sampling_with_the_default_settings_answers(engine: LocalEngine) -> None:
    defaults = EngineSettings(model_path=bundled_model_path())
    assert (defaults.temperature, defaults.top_p) == (0.2, 0.9)  # SmolLM2-Instruct model card
    assert (defaults.repeat_penalty, defaults.repeat_last_n) == (1.1, 64)
    params = GenerationParams(max_tokens=16, temperature=defaults.temperature, top_p=defaults.top_p, seed=7)
    text = await engine.generate([ChatMessage("user", "What is the capital of France?")], params).text()
    assert text.strip()


async def test_multi_byte_characters_split_over_tokens_come_out_whole(engine: LocalEngine) -> None:
    ask = [ChatMessage("user", "Repeat exactly: 日本語のテキスト 🐉🐉 café")]
    text = await engine.generate(ask, GenerationParams(max_tokens=32, temperature=0.0)).text()
    assert text
    assert "\ufffd" not in text
    text.encode("utf-8")  # no lone surrogates either


async def test_history_is_trimmed_oldest_first_keeping_the_system_prompt() -> None:
    engine = LocalEngine(engine_settings(n_ctx=256, parallel=1))
    await engine.start()
    try:
        history: list[ChatMessage] = [ChatMessage("system", "You are a helpful assistant named Parley.")]
        for i in range(6):
            history.append(ChatMessage("user", f"Question {i}: " + "tell me about rivers and lakes " * 6))
            history.append(ChatMessage("assistant", f"Answer {i}: " + "rivers flow into lakes and seas " * 6))
        history.append(ChatMessage("user", "Thanks!"))
        params = GenerationParams(max_tokens=4, temperature=0.0)
        reply = engine.generate(history, params)
        await reply.text()
        usage = reply.usage
        assert usage.dropped_messages > 0
        assert usage.dropped_messages % 2 == 0  # whole exchanges: the kept history starts with a user turn
        assert usage.prompt_tokens <= 256 - 4
        assert usage.prompt_tokens >= await engine.count_tokens([history[0], history[-1]])
    finally:
        await engine.stop()


async def test_a_long_history_is_trimmed_to_within_a_step_of_the_budget() -> None:
    """ChatML's ``assistant`` is two tokens where ``user`` is one: counted as one, the 300 dropped
    replies of this history would have cost it about 300 of its 504 tokens of room."""
    engine = LocalEngine(engine_settings(n_ctx=512, parallel=1))
    await engine.start()
    try:
        model = engine.model
        assert model is not None
        assert model.message_tokens == {"user": 5, "assistant": 6}
        history: list[ChatMessage] = [ChatMessage("system", "You are Parley.")]
        for i in range(300):
            history += [ChatMessage("user", f"Question {i}?"), ChatMessage("assistant", f"Answer {i}.")]
        history.append(ChatMessage("user", "Thanks!"))
        reply = engine.generate(history, GenerationParams(max_tokens=8, temperature=0.0))
        await reply.text()
        budget = 512 - 8
        exchange = await engine.count_tokens(history[1:3]) - await engine.count_tokens([])
        assert reply.usage.dropped_messages > 0
        assert budget - budget * TRIM_STEP - exchange < reply.usage.prompt_tokens <= budget
    finally:
        await engine.stop()


async def test_a_message_that_cannot_fit_alone_is_a_clear_error(engine: LocalEngine) -> None:
    huge = [ChatMessage("user", "word " * 3000)]
    with pytest.raises(ContextOverflow, match="does not fit"):
        await engine.generate(huge, GREEDY).text()
    assert (await engine.generate(HELLO, GREEDY).text()).strip()


async def test_cancel_before_iterating_generates_nothing(engine: LocalEngine) -> None:
    reply = engine.generate(HELLO, GREEDY)
    reply.cancel()
    assert await reply.text() == ""
    assert reply.usage.finish_reason == "cancelled"


async def test_a_file_that_is_not_a_model_fails_start_with_engine_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    engine = LocalEngine(engine_settings(model_path=bad))
    with pytest.raises(EngineError, match="cannot load"):
        await engine.start()
    assert engine.status() != "ready"
    await engine.stop()


async def test_not_started_is_an_engine_error_and_stop_is_idempotent() -> None:
    engine = LocalEngine(engine_settings())
    with pytest.raises(EngineError, match="not started"):
        await engine.count_tokens(HELLO)
    with pytest.raises(EngineError, match="not started"):
        await engine.generate(HELLO, GREEDY).text()
    await engine.stop()
    await engine.stop()
    assert engine.status() == "stopped"


async def test_a_prepared_system_prompt_is_copied_not_read_by_a_new_conversation() -> None:
    system = "You are a helpful assistant in a busy community chat. Answer briefly and kindly."
    engine = LocalEngine(engine_settings())
    await engine.start()
    try:
        await engine.prepare(system)
        before = engine.stats
        reply = engine.generate([ChatMessage("system", system), ChatMessage("user", "Say hi.")], GREEDY, affinity="c1")
        await reply.text()
        after = engine.stats
        assert engine._scheduler is not None
        measured = engine._scheduler.reply_times.count
    finally:
        await engine.stop()
    assert measured == 1, "the read-ahead is no reply: its time is not in the queue's estimates"
    decoded = after.prompt_tokens_decoded - before.prompt_tokens_decoded
    assert decoded < reply.usage.prompt_tokens - 15, "the system prompt came from the prepared sequence"
    assert after.kv_misses - before.kv_misses == 1, "it is still the conversation's first turn"
    assert engine.metrics()["queue_wait_count"] == 1, "the read-ahead is no reply: only the one turn waited"
