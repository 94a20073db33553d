"""Single stream: the bot's HTTP API against raw llama-cpp-python high-level streaming.

The same prompt (the bot's system prompt and one user message), greedy, no repetition penalty on
either side, the same number of threads. Runs alternate between the two and never overlap, so
both see the same machine state; each figure is the median of the runs. Tokens/s counts the reply's
tokens (by the model's own tokenizer, the same measure on both sides) over the whole request's wall
time, prompt included.
"""

from __future__ import annotations

import asyncio
import time

from bench.common import Options, Row, Vocabulary, ask, bench_settings, client, median, ratio, running

PROMPT = "Write a long story about a lighthouse keeper who finds a map."


def raw_run(llm: object, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, float]:
    start = time.perf_counter()
    pieces = []
    for chunk in llm.create_chat_completion(  # type: ignore[attr-defined]
        messages, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0, seed=42, stream=True
    ):
        delta = chunk["choices"][0]["delta"]
        if delta.get("content"):
            pieces.append(delta["content"])
    return "".join(pieces), time.perf_counter() - start


async def run(options: Options, vocabulary: Vocabulary) -> list[Row]:
    import llama_cpp

    max_tokens = 48 if options.quick else 128
    settings = bench_settings(options, "single", max_tokens=max_tokens, repeat_penalty=1.0, threads=options.threads)
    llm = llama_cpp.Llama(
        str(vocabulary.path),
        n_ctx=settings.engine.n_ctx,
        n_threads=options.threads,
        n_threads_batch=options.threads,
        seed=42,
        verbose=False,
    )
    messages = [{"role": "system", "content": settings.system_prompt}, {"role": "user", "content": PROMPT}]
    raw_rates: list[float] = []
    bot_rates: list[float] = []
    try:
        async with running(settings) as (_app, url), client() as http:
            await asyncio.to_thread(raw_run, llm, messages, max_tokens)  # warm-up, both sides
            await ask(http, url, PROMPT, max_tokens=max_tokens)
            for _ in range(options.runs):
                text, seconds = await asyncio.to_thread(raw_run, llm, messages, max_tokens)
                raw_rates.append(vocabulary.tokens(text) / seconds)
                answer = await ask(http, url, PROMPT, max_tokens=max_tokens)
                bot_rates.append(vocabulary.tokens(answer.text) / answer.seconds)
    finally:
        llm.close()
    raw, bot = median(raw_rates), median(bot_rates)
    runs = f"{options.runs} runs, {max_tokens} max tokens"
    return [
        Row("single", "raw Llama streaming", raw, "tok/s", note=", ".join(f"{r:.0f}" for r in raw_rates)),
        Row("single", "bot HTTP API", bot, "tok/s", note=", ".join(f"{r:.0f}" for r in bot_rates)),
        Row("single", "bot / raw", ratio(bot, raw), "x", ">= 1.25", ratio(bot, raw) >= 1.25, runs),
    ]
