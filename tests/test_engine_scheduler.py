"""The local engine's scheduler on the real model: batching, cancelling, the queue, the KV cache.

Nothing here depends on exact text (batching changes floating-point order) or on timing: the
order of events and the engine's counters (``engine.stats``) are what is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.engine import ChatMessage, GenerationParams, QueueStatus, Reply
from bot.errors import EngineBusy, EngineError
from engine import scheduler
from engine.kvcache import SavedState
from engine.local import LocalEngine
from engine.scheduler import EngineStats
from tests.test_engine_local import engine_settings

SHORT = GenerationParams(max_tokens=8, temperature=0.0)
LONG = GenerationParams(max_tokens=1000, temperature=0.0)
COUNT = [ChatMessage("user", "Count from 1 to 500, one number per line.")]


def chat(name: str, *turns: str) -> list[ChatMessage]:
    """A conversation with its own system prompt, so no other test's KV shares its prefix."""
    messages = [ChatMessage("system", f"You are {name}, a terse assistant.")]
    for i, text in enumerate(turns):
        messages.append(ChatMessage("user" if i % 2 == 0 else "assistant", text))
    return messages


def delta(before: EngineStats, after: EngineStats) -> dict[str, int]:
    a, b = dataclasses.asdict(before), dataclasses.asdict(after)
    return {key: b[key] - a[key] for key in a}


@contextlib.asynccontextmanager
async def started(**overrides: Any) -> AsyncIterator[LocalEngine]:
    """An engine of its own for one test, stopped afterwards."""
    engine = LocalEngine(engine_settings(**overrides))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def follow_up(
    engine: LocalEngine, first: list[ChatMessage], answer: str, text: str, affinity: str
) -> tuple[Reply, dict[str, int]]:
    """The next turn of ``first``'s conversation (its ``answer``, then ``text``): the reply, and the
    counters it changed."""
    before = engine.stats
    reply = engine.generate(
        [*first, ChatMessage("assistant", answer), ChatMessage("user", text)], SHORT, affinity=affinity
    )
    assert (await reply.text()).strip()
    return reply, delta(before, engine.stats)


async def first_delta(reply: Reply) -> str:
    return await anext(aiter(reply))


@contextlib.asynccontextmanager
async def queued_behind(engine: LocalEngine, name: str) -> AsyncIterator[tuple[Reply, Reply, asyncio.Task[str]]]:
    """A long reply holding the engine's only place, and a short one (``name``'s) queued behind it: the
    two replies and the queued one's text; the long one is cancelled on leaving."""
    running = engine.generate(COUNT, LONG)
    await first_delta(running)
    try:
        queued = engine.generate(chat(name, "Say hi."), SHORT)
        waiting = asyncio.create_task(queued.text())
        await wait_for(lambda: engine.stats.queued == 1)
        yield running, queued, waiting
    finally:
        running.cancel()


async def wait_for(condition: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LocalEngine]:
    engine = LocalEngine(engine_settings(prompt_chunk=64))
    await engine.start()
    yield engine
    await engine.stop()


@pytest.fixture(scope="module")
async def single() -> AsyncIterator[LocalEngine]:
    """One place, one queued request at most, repetition allowed (long replies)."""
    engine = LocalEngine(engine_settings(parallel=1, queue_size=1, queue_timeout=1.5, repeat_penalty=1.0))
    await engine.start()
    yield engine
    await engine.stop()


async def test_sequences_join_and_leave_a_running_batch(engine: LocalEngine) -> None:
    events: list[str] = []

    async def run(name: str, reply: Reply) -> None:
        async for _ in reply:
            events.append(name)
        events.append(name + " done")

    long = asyncio.create_task(run("long", engine.generate(COUNT, GenerationParams(max_tokens=96, temperature=0))))
    await wait_for(lambda: events.count("long") >= 3)
    short = [engine.generate(chat(f"Joiner{i}", "Say hi."), SHORT) for i in range(2)]
    await asyncio.gather(*(run(f"short{i}", reply) for i, reply in enumerate(short)))
    assert "long done" not in events  # both joined and left while the long reply ran
    await long
    assert events.index("short0") < events.index("long done")
    assert events[-1] == "long done"
    assert all(reply.usage.finish_reason in {"stop", "length"} for reply in short)


async def test_a_steps_results_cross_to_the_event_loop_in_one_call(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Posted one by one, every token woke the event loop while the worker still ran Python, and the
    two threads took turns at the GIL; the worker posts each step's results together instead."""
    loop = asyncio.get_running_loop()
    crossings = 0
    post = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any) -> asyncio.Handle:
        nonlocal crossings
        if threading.current_thread().name == "llama-scheduler":
            crossings += 1
        return post(callback, *args)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    before = engine.stats
    replies = [engine.generate(chat(f"Batched{i}", "Name three colours."), SHORT) for i in range(3)]
    deltas = await asyncio.gather(*(collect(reply) for reply in replies))
    steps = engine.stats.steps - before.steps
    items = sum(len(d) for d in deltas) + 2 * len(replies)  # the text deltas, and each STARTED and DONE
    assert items > steps + 1
    assert crossings <= steps + 1  # at most one per step, and one after the last


async def test_text_waits_to_cross_but_a_replys_first_text_and_its_end_go_at_once(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With text allowed to wait (here as long as it likes), a reply's first words still come while
    it is generating, the rest comes as one delta with its end, and nothing is lost."""
    monkeypatch.setattr(scheduler, "POST_GAP", 3600.0)
    reply = engine.generate(chat("Patient", "Count from 1 to 20."), GenerationParams(max_tokens=40, temperature=0.0))
    pieces = []
    async for piece in reply:
        if not pieces:
            assert engine.stats.active == 1, "the first text came before the reply ended"
        pieces.append(piece)
    assert reply.usage.completion_tokens > 3
    assert 1 <= len(pieces) <= 3  # the first text (a token or two), then the rest with the end
    model = engine.model
    assert model is not None
    assert abs(len(model.tokenize("".join(pieces))) - reply.usage.completion_tokens) <= 2  # every token's text


async def collect(reply: Reply) -> list[str]:
    return [piece async for piece in reply]


async def test_a_prompt_longer_than_the_chunk_is_read_over_several_steps(engine: LocalEngine) -> None:
    text = " ".join(f"item {i}" for i in range(60))
    ask = chat("Lister", f"Here is a list: {text}. What is the first item?")
    before = engine.stats
    reply = engine.generate(ask, SHORT)
    answer = await reply.text()
    change = delta(before, engine.stats)
    assert answer.strip()
    assert reply.usage.prompt_tokens > 2 * 64
    assert change["prompt_tokens_decoded"] > 2 * 64
    assert change["steps"] >= -(-change["prompt_tokens_decoded"] // 64)


async def test_the_next_turn_reads_only_its_new_tokens(engine: LocalEngine) -> None:
    first = chat("Rivers", "Name a long river.")
    reply = engine.generate(first, SHORT, affinity="rivers")
    answer = await reply.text()
    reply, change = await follow_up(engine, first, answer, "And a short one?", "rivers")
    assert change["kv_hits"] == 1
    assert change["kv_misses"] == 0
    assert change["prompt_tokens_decoded"] < reply.usage.prompt_tokens / 2


async def test_an_idle_engine_reads_the_end_of_a_finished_turn_ahead(engine: LocalEngine) -> None:
    model = engine.model
    assert model is not None
    assert model.turn_suffix  # ChatML: <|im_end|> \n <|im_start|> user \n
    first = chat("Fjords", "Name a big fjord.")
    before = engine.stats
    answer = await engine.generate(first, SHORT, affinity="fjords").text()
    await wait_for(lambda: engine.stats.reading_ahead == 0)
    assert delta(before, engine.stats)["idle_tokens"] >= len(model.turn_suffix)
    question = "And a small one?"
    _reply, change = await follow_up(engine, first, answer, question, "fjords")
    assert change["kv_hits"] == 1
    # Only the question and the answer's opening (as long as the suffix, plus a token where the
    # question meets it) are read; without the suffix read ahead it would be read too.
    assert change["prompt_tokens_decoded"] <= len(model.tokenize(question)) + len(model.turn_suffix) + 2


async def test_a_returning_conversation_reads_the_end_of_its_turn_ahead_while_others_generate() -> None:
    async with started(parallel=2, repeat_penalty=1.0) as engine:
        model = engine.model
        assert model is not None
        suffix = len(model.turn_suffix)
        running = engine.generate(COUNT, LONG)  # the engine is never idle while it runs
        stream = aiter(running)
        await anext(stream)
        first = chat("Glaciers", "Name a glacier.")
        before = engine.stats
        answer = await engine.generate(first, SHORT, affinity="glaciers").text()
        steps = engine.stats.steps
        await wait_for(lambda: engine.stats.steps >= steps + 3)
        # A first turn may be a one-off: its end waits for an idle engine, which this is not.
        assert delta(before, engine.stats)["busy_ahead_tokens"] == 0
        assert engine.stats.reading_ahead == 1

        second = [*first, ChatMessage("assistant", answer), ChatMessage("user", "And another?")]
        answer = await engine.generate(second, SHORT, affinity="glaciers").text()
        await wait_for(lambda: engine.stats.reading_ahead == 0)
        change = delta(before, engine.stats)
        assert change["kv_hits"] == 1  # it came back: its end goes along with the long reply's steps
        assert suffix <= change["busy_ahead_tokens"] <= suffix + 1  # + its last token, at max_tokens
        assert change["idle_tokens"] == 0
        question = "One more?"
        _reply, change = await follow_up(engine, second, answer, question, "glaciers")
        assert change["kv_hits"] == 1
        assert change["prompt_tokens_decoded"] <= len(model.tokenize(question)) + suffix + 2
        assert running.usage.finish_reason is None  # it ran all along: nothing was read while idle
        running.cancel()
        await running.text()


async def test_a_step_that_fails_with_a_read_ahead_leaves_the_turn_to_be_read_again() -> None:
    async with started(parallel=2, repeat_penalty=1.0) as engine:
        scheduler = engine._scheduler
        assert scheduler is not None
        assert engine.model is not None
        first = chat("Deltas", "Name a river delta.")
        answer = await engine.generate(first, SHORT, affinity="deltas").text()
        second = [*first, ChatMessage("assistant", answer), ChatMessage("user", "And another?")]
        running = engine.generate(COUNT, LONG)
        stream = aiter(running)
        await anext(stream)
        real = scheduler.context.decode
        failed: list[int] = []

        def decode(batch: Any) -> int:
            raw = batch.raw
            sampled = {raw.seq_id[i][0] for i in range(len(batch)) if raw.logits[i]}
            if not failed and {raw.seq_id[i][0] for i in range(len(batch))} - sampled:
                failed.append(len(batch))  # a sequence read ahead alongside the long reply's token
                return 1  # llama.cpp: no KV room
            return real(batch)

        scheduler.context.decode = decode  # type: ignore[method-assign]
        answer = await engine.generate(second, SHORT, affinity="deltas").text()  # a returning turn
        with pytest.raises(EngineError, match="llama_decode failed"):
            async for _ in stream:
                pass
        assert len(failed) == 1
        assert failed[0] > 1
        before = engine.stats
        assert before.reading_ahead == 0
        question = "One more?"
        reply, change = await follow_up(engine, second, answer, question, "deltas")
        assert change["kv_hits"] == 1  # the turn itself was kept; only its end is read again
        assert change["prompt_tokens_decoded"] >= len(engine.model.tokenize(question)) + len(engine.model.turn_suffix)
        assert reply.usage.finish_reason in {"stop", "length"}


async def test_an_end_of_turn_read_ahead_is_dropped_when_the_conversation_is_forgotten(engine: LocalEngine) -> None:
    first = chat("Ponds", "Name a pond.")
    before = engine.stats
    answer = await engine.generate(first, SHORT, affinity="ponds").text()
    engine.forget("ponds")  # /reset at once, within the idle grace
    again = [*first, ChatMessage("assistant", answer), ChatMessage("user", "Another?")]
    reply = engine.generate(again, SHORT, affinity="ponds")
    assert (await reply.text()).strip()
    change = delta(before, engine.stats)
    assert change["kv_misses"] == 2  # nothing of the forgotten turn, read ahead or not, was reused
    assert change["kv_hits"] == 0


async def test_a_conversation_resumes_from_ram_after_others_took_its_place(engine: LocalEngine) -> None:
    first = chat("Mountains", "Name a high mountain.")
    answer = await engine.generate(first, SHORT, affinity="mountains").text()
    # Eight other conversations, four at a time: every place is taken by someone else.
    for batch in range(2):
        others = [engine.generate(chat(f"Other{batch}{i}", "Hi."), SHORT, affinity=f"o{batch}{i}") for i in range(4)]
        await asyncio.gather(*(reply.text() for reply in others))
    reply, change = await follow_up(engine, first, answer, "And a low one?", "mountains")
    assert change["kv_restores_ram"] == 1
    assert change["kv_hits"] == 1
    assert change["prompt_tokens_decoded"] < reply.usage.prompt_tokens / 2


async def test_a_conversation_moves_next_to_the_running_ones_to_keep_sequence_ids_consecutive() -> None:
    async with started(parallel=4, repeat_penalty=1.0) as engine:
        names = ["Ana", "Ben", "Cy", "Dee"]
        answers = {}
        for name in names:  # one at a time: each takes the lowest free sequence, 0 to 3
            answers[name] = await engine.generate(chat(name, "Hi."), SHORT, affinity=name).text()
        running = engine.generate(
            [*chat("Ana", "Hi.", answers["Ana"]), *COUNT],
            GenerationParams(max_tokens=200, temperature=0.0),
            affinity="Ana",
        )
        await first_delta(running)  # Ana runs in sequence 0
        before = engine.stats
        # Cy's KV is in sequence 2; running there would leave a gap at 1, so it moves to 1 (Ben's is saved).
        second = chat("Cy", "Hi.", answers["Cy"], "Again?")
        reply = engine.generate(second, SHORT, affinity="Cy")
        assert (await reply.text()).strip()
        change = delta(before, engine.stats)
        assert (change["kv_moves"], change["kv_saves"], change["kv_hits"]) == (1, 1, 1)
        assert change["prompt_tokens_decoded"] < reply.usage.prompt_tokens / 2
        running.cancel()
        await running.text()
        # Ben's turn, nothing running: restored from RAM, wherever it lands.
        before = engine.stats
        reply = engine.generate(chat("Ben", "Hi.", answers["Ben"], "Again?"), SHORT, affinity="Ben")
        assert (await reply.text()).strip()
        change = delta(before, engine.stats)
        assert (change["kv_restores_ram"], change["kv_hits"]) == (1, 1)


async def test_forget_drops_the_kept_state(engine: LocalEngine) -> None:
    first = chat("Lakes", "Name a lake.")
    answer = await engine.generate(first, SHORT, affinity="lakes").text()
    engine.forget("lakes")
    reply, change = await follow_up(engine, first, answer, "Another?", "lakes")
    assert change["kv_misses"] == 1
    assert change["kv_hits"] == 0
    # The forgotten KV held the whole first turn. Another place may still lend the few tokens that
    # every chat() prompt begins with ("<|im_start|>system\nYou are "), never more.
    assert change["prompt_tokens_decoded"] > reply.usage.prompt_tokens - await engine.count_tokens(first) // 2


async def test_a_conversation_past_its_context_reads_only_its_new_tokens_on_most_turns() -> None:
    """History trimmed in steps keeps the prompt's prefix, and so its KV, for the next turns."""
    async with started(n_ctx=320, parallel=1) as engine:
        messages = chat("Tides", "Tell me about tides " + "and the moon " * 12)
        turns: list[tuple[int, int, int]] = []  # (dropped messages, prompt tokens, tokens read)
        for turn in range(12):
            before = engine.stats
            reply = engine.generate(messages, SHORT, affinity="tides")
            answer = await reply.text()
            usage = reply.usage
            read = delta(before, engine.stats)["prompt_tokens_decoded"]
            turns.append((usage.dropped_messages, usage.prompt_tokens, read))
            messages += [ChatMessage("assistant", answer), ChatMessage("user", f"Turn {turn}: " + "tides " * 20)]
        trimmed = [turn for turn in turns if turn[0] > 0]
        assert len(trimmed) >= 5, turns  # the conversation outgrew its context well before the end
        # Cutting no more than must would re-read the kept history on every one of these turns. In
        # steps of a quarter of the budget (78 tokens) against 44 tokens of growth a turn, the cut
        # moves, and the history is read again, on about every other turn.
        read_again = [turn for turn in trimmed if turn[2] > turn[1] / 2]
        assert len(read_again) <= len(trimmed) // 2 + 1, turns
        assert all(turn[2] < 50 for turn in trimmed if turn not in read_again), turns


async def test_a_saved_state_that_does_not_load_is_read_again(engine: LocalEngine) -> None:
    first = chat("Deserts", "Name a desert.")
    answer = await engine.generate(first, SHORT, affinity="deserts").text()
    others = [engine.generate(chat(f"Filler{i}", "Hi."), SHORT, affinity=f"f{i}") for i in range(4)]
    await asyncio.gather(*(reply.text() for reply in others))
    cache = engine.cache
    assert cache is not None
    found = cache.take("deserts")  # the worker is idle: nothing else touches the cache now
    assert found is not None
    saved, _tier = found
    cache.put("deserts", SavedState(saved.tokens, saved.state[: len(saved.state) // 3]))
    reply, change = await follow_up(engine, first, answer, "Another?", "deserts")
    assert change["kv_load_failures"] == 1
    assert change["kv_misses"] == 1
    assert change["prompt_tokens_decoded"] == reply.usage.prompt_tokens


async def test_cancel_frees_the_place_for_a_queued_request(single: LocalEngine) -> None:
    async with queued_behind(single, "Queued") as (running, _, waiting):
        running.cancel()
        assert (await waiting).strip()
    rest = "".join([delta async for delta in running])
    assert running.usage.finish_reason == "cancelled"
    assert running.usage.completion_tokens < LONG.max_tokens
    assert isinstance(rest, str)
    assert single.stats.active == 0


async def test_cancelling_a_queued_request_frees_its_queue_place_at_once(single: LocalEngine) -> None:
    async with queued_behind(single, "Impatient") as (_, queued, waiting):
        queued.cancel()
        assert await waiting == ""
        assert queued.usage.finish_reason == "cancelled"
        assert single.stats.queued == 0
        again = single.generate(chat("Next", "Say hi."), SHORT)
        next_waiting = asyncio.create_task(again.text())
        await wait_for(lambda: single.stats.queued == 1)  # queued, not refused
    assert (await next_waiting).strip()


async def test_closing_the_iterator_frees_the_place(single: LocalEngine) -> None:
    running = single.generate(COUNT, LONG)
    async with running:
        await first_delta(running)
    queued = single.generate(chat("After", "Say hi."), SHORT)
    assert (await queued.text()).strip()
    await wait_for(lambda: running.usage.finish_reason == "cancelled")


async def test_a_full_queue_is_busy_at_once_and_a_long_wait_is_busy_at_the_timeout() -> None:
    # A wait far shorter than the running reply, whose length the model decides: counting, it
    # ran for 121 tokens (1.2 s) on one machine and longer on another.
    async with started(parallel=1, queue_size=1, queue_timeout=0.25, repeat_penalty=1.0) as single:
        async with queued_behind(single, "Waiter") as (running, _, waiting):
            with pytest.raises(EngineBusy, match="busy"):
                await single.generate(chat("Third", "Say hi."), SHORT).text()
            with pytest.raises(EngineBusy, match=r"within 0\.25s"):
                await waiting  # queue_timeout: the long reply still holds the only place
            assert single.stats.queued == 0
            assert running.usage.finish_reason is None
        await running.text()


async def test_stop_cancels_running_and_queued_replies() -> None:
    engine = LocalEngine(engine_settings(parallel=1, repeat_penalty=1.0))
    await engine.start()
    async with queued_behind(engine, "Late") as (running, queued, waiting):
        await engine.stop()
    assert await waiting == ""
    assert queued.usage.finish_reason == "cancelled"
    await running.text()
    assert running.usage.finish_reason == "cancelled"
    await engine.stop()


async def test_a_restart_with_a_cache_directory_resumes_with_only_new_tokens(tmp_path: Path) -> None:
    settings = engine_settings(parallel=2, kv_cache_dir=tmp_path / "kv")
    first = chat("Oceans", "Name an ocean.")
    engine = LocalEngine(settings)
    await engine.start()
    try:
        answer = await engine.generate(first, SHORT, affinity="oceans").text()
    finally:
        await engine.stop()  # the places' states go to the directory
    second = [*first, ChatMessage("assistant", answer), ChatMessage("user", "Another?")]

    engine = LocalEngine(settings)
    await engine.start()
    try:
        assert engine.stats.kv_disk_entries == 1
        reply = engine.generate(second, SHORT, affinity="oceans")
        assert (await reply.text()).strip()
        stats = engine.stats
        assert (stats.kv_restores_disk, stats.kv_hits) == (1, 1)
        assert stats.prompt_tokens_decoded < reply.usage.prompt_tokens / 2
        cache = engine.cache
        assert cache is not None
        path = cache.path_of("oceans")
    finally:
        await engine.stop()

    assert path is not None
    data = bytearray(path.read_bytes())  # rewritten at stop, with the second turn
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    engine = LocalEngine(settings)
    await engine.start()
    try:
        reply = engine.generate(second, SHORT, affinity="oceans")
        assert (await reply.text()).strip()
        stats = engine.stats
        assert (stats.kv_misses, stats.kv_restores_disk) == (1, 0)
        assert stats.prompt_tokens_decoded == reply.usage.prompt_tokens
    finally:
        await engine.stop()
    # Another context shape, or flash attention switched (the V cache is laid out otherwise), never loads them.
    for shape in ({"parallel": 3}, {"parallel": 2, "flash_attn": "off"}):
        other = LocalEngine(engine_settings(**shape, kv_cache_dir=tmp_path / "kv"))
        await other.start()
        try:
            assert other.stats.kv_disk_entries == 0
        finally:
            await other.stop()


async def test_queued_requests_are_told_their_place_as_the_line_moves() -> None:
    async with started(parallel=1, queue_size=3, repeat_penalty=1.0) as engine:
        for i in range(3):  # measured reply times, for the estimate
            await engine.generate(chat(f"Warm{i}", "Say hi."), SHORT).text()
        running = engine.generate(COUNT, LONG)
        stream = aiter(running)
        for _ in range(40):  # five times as many tokens as any measured reply
            await anext(stream)
        queued = [engine.generate(chat(f"Queued{i}", "Say hi."), SHORT) for i in range(3)]
        heard: list[list[QueueStatus | None]] = [[] for _ in queued]
        for reply, statuses in zip(queued, heard, strict=True):
            reply.on_queue.append(statuses.append)
        waiting = []
        for reply in queued:
            waiting.append(asyncio.create_task(reply.text()))
            await wait_for(lambda reply=reply: reply.queue is not None)  # in this order
        assert [reply.queue.position for reply in queued if reply.queue] == [1, 2, 3]
        # The long reply has run longer than any measured one: it may end at any time, so no estimate.
        assert all(reply.queue and reply.queue.eta_seconds is None for reply in queued)
        running.cancel()
        assert all(await asyncio.gather(*waiting))
        positions = [[status.position if status else None for status in statuses] for statuses in heard]
        assert positions == [[1, None], [2, 1, None], [3, 2, 1, None]]
        await running.text()


async def test_a_new_conversation_starts_from_the_system_prompt_another_sequence_already_read(
    engine: LocalEngine,
) -> None:
    system = ChatMessage("system", "You are Parley, a patient assistant for the prefix-sharing test. " * 3)
    first = await engine.generate([system, ChatMessage("user", "Hi.")], SHORT, affinity="prefix-a").text()
    assert first.strip()
    before = engine.stats
    reply = engine.generate([system, ChatMessage("user", "Hello there.")], SHORT, affinity="prefix-b")
    assert (await reply.text()).strip()
    change = delta(before, engine.stats)
    # A new conversation, so a miss; but it started from a copy of prefix-a's system prompt.
    assert (change["kv_misses"], change["kv_prefix_copies"]) == (1, 1)
    assert change["prompt_tokens_decoded"] < reply.usage.prompt_tokens - 30
    # prefix-a still has its own KV: its next turn continues from it.
    before = engine.stats
    again = [system, ChatMessage("user", "Hi."), ChatMessage("assistant", first), ChatMessage("user", "Again?")]
    assert (await engine.generate(again, SHORT, affinity="prefix-a").text()).strip()
    assert delta(before, engine.stats)["kv_hits"] == 1


async def test_the_same_question_in_a_new_conversation_starts_where_it_was_already_read() -> None:
    async with started(parallel=2) as engine:
        italy = chat("Quizzer", "What is the capital of Italy?")
        spider = chat("Quizzer", "How many legs does a spider have?")
        await engine.generate(spider, SHORT, affinity="quiz-spider").text()
        answer = await engine.generate(italy, SHORT, affinity="quiz-italy").text()
        # Both places are owned. Each question again, in new conversations: each takes the place
        # that holds its whole prompt, not the least recently used one, and so leaves the other.
        for question, name in ((italy, "again-italy"), (spider, "again-spider")):
            before = engine.stats
            reply = engine.generate(question, SHORT, affinity=name)
            assert (await reply.text()).strip()
            change = delta(before, engine.stats)
            assert change["kv_misses"] == 1
            assert change["prompt_tokens_decoded"] <= 2, name
        # quiz-italy's own KV went to RAM and comes back for its next turn.
        _reply, change = await follow_up(engine, italy, answer, "And of Spain?", "quiz-italy")
        assert (change["kv_hits"], change["kv_restores_ram"]) == (1, 1)


async def test_a_new_conversation_starts_from_a_prefix_saved_in_the_ram_cache() -> None:
    async with started(parallel=1) as engine:
        question = chat("Geographer", "What is the longest river in Africa?")
        answer = await engine.generate(question, SHORT, affinity="saved-a").text()
        await engine.generate(chat("Other", "Say hi."), SHORT, affinity="saved-b").text()  # saved-a goes to RAM
        before = engine.stats
        reply = engine.generate(question, SHORT, affinity="saved-c")
        assert (await reply.text()).strip()
        change = delta(before, engine.stats)
        assert (change["kv_misses"], change["kv_prefix_copies"]) == (1, 1)
        assert change["prompt_tokens_decoded"] <= 2
        # The copied entry stayed: saved-a's next turn still resumes from it.
        _reply, change = await follow_up(engine, question, answer, "And in Asia?", "saved-a")
        assert (change["kv_hits"], change["kv_restores_ram"]) == (1, 1)


async def test_a_prompt_sharing_only_a_few_tokens_is_read_not_copied(engine: LocalEngine) -> None:
    await engine.generate(chat("Flo", "Hi."), SHORT, affinity="few-a").text()
    before = engine.stats
    await engine.generate(chat("Gus", "Hi."), SHORT, affinity="few-b").text()
    assert delta(before, engine.stats)["kv_prefix_copies"] == 0


async def test_a_gap_left_by_a_finished_reply_is_closed_by_moving_a_running_one_down() -> None:
    async with started(parallel=4, repeat_penalty=1.0) as engine:
        long = GenerationParams(max_tokens=120, temperature=0.0)
        # One at a time into a fresh context: sequences 0, 1 and 2.
        first = engine.generate(chat("Ann", "Count from 1 to 500, one number per line."), long, affinity="gap-a")
        await first_delta(first)
        middle = engine.generate(chat("Bo", "Hi."), SHORT, affinity="gap-b")
        await first_delta(middle)
        last = engine.generate(chat("Cleo", "Count from 1 to 500, one number per line."), long, affinity="gap-c")
        await first_delta(last)
        before = engine.stats
        await middle.text()  # sequence 1 is free: 0 and 2 would take two passes a step
        await wait_for(lambda: delta(before, engine.stats)["kv_moves"] >= 1)
        texts = await asyncio.gather(first.text(), last.text())
        assert all(text.strip() for text in texts)
        assert first.usage.finish_reason == last.usage.finish_reason == "length"
        assert first.usage.completion_tokens == last.usage.completion_tokens == 120
        # The moved conversation's next turn continues from its KV, wherever it now is.
        before = engine.stats
        follow = [*chat("Cleo", "Count from 1 to 500, one number per line.", texts[1]), ChatMessage("user", "Thanks.")]
        assert (await engine.generate(follow, SHORT, affinity="gap-c").text()).strip()
        assert delta(before, engine.stats)["kv_hits"] == 1
