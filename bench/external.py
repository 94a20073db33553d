"""An external OpenAI-compatible server (``--openai-url``): answering directly, and through Parley.

The concurrency benchmark's prompts (each with the bot's system prompt), greedy, at 1, 4 and 8
requests at once: straight to ``{url}/chat/completions``, then through Parley's HTTP API with the
OpenAI backend pointed at the server (``CONCURRENCY=8``). Tokens are the server's reported
``usage.completion_tokens``, or one per streamed chunk where it reports none. A server on this
machine competes with the bot for its cores.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from bench import concurrency
from bench.common import FACTUAL, SEED, Options, Row, client, median
from bot.settings import DEFAULT_SYSTEM_PROMPT


async def complete(http: aiohttp.ClientSession, url: str, model: str, prompt: str, max_tokens: int) -> int:
    body = {
        "model": model,
        "messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": SEED,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks, reported = 0, None
    async with http.post(url.rstrip("/") + "/chat/completions", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {(await response.text())[:300]}")
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data:") or line.endswith(b"[DONE]"):
                continue
            event = json.loads(line[5:])
            usage = event.get("usage")
            if usage:
                reported = int(usage.get("completion_tokens", 0))
            chunks += sum(1 for c in event.get("choices") or [] if (c.get("delta") or {}).get("content"))
    return reported if reported is not None else chunks


async def direct(options: Options, url: str, model: str, max_tokens: int) -> dict[int, tuple[float, float]]:
    repeats = 1 if options.quick else 2
    rates: dict[int, list[float]] = {n: [] for n in concurrency.LEVELS}
    async with client(fresh=True) as http:
        await complete(http, url, model, FACTUAL[0], 8)
        for _ in range(repeats):
            for n in concurrency.LEVELS:
                tokens, seconds = 0, 0.0
                for first in range(0, len(FACTUAL), n):
                    start = time.perf_counter()
                    wave = FACTUAL[first : first + n]
                    counts = await asyncio.gather(*(complete(http, url, model, p, max_tokens) for p in wave))
                    seconds += time.perf_counter() - start
                    tokens += sum(counts)
                rates[n].append(tokens / seconds)
    return {n: (median(rates[n]), float("nan")) for n in concurrency.LEVELS}


async def run(options: Options, model: str) -> list[Row]:
    url = options.openai_url
    assert url is not None
    max_tokens = 48 if options.quick else 96
    figures = await direct(options, url, model, max_tokens)
    rows = concurrency.rows(figures, "server directly", max_tokens, bench="external", goal=False)
    rows = [row for row in rows if "slowest" not in row.label]
    through = await concurrency.run(
        options, "Parley via OpenAI backend", "external", backend="openai", base_url=url, model=model, concurrency=8
    )
    for row in through:
        row.bench = "external"
    return rows + through
