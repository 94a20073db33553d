"""An external OpenAI-compatible server (``--openai-url``): answering directly, and through Parley.

The concurrency benchmark's prompts (each with the bot's system prompt), greedy, at 1, 4 and 8
requests at once: straight to ``{url}/chat/completions``, then through Parley's HTTP API with the
OpenAI backend pointed at the server (``CONCURRENCY=8``). Before those, the interleaving
benchmark's conversations straight to the server, for its own round 8 / round 1: start the server
afresh for it, since llama.cpp's server keeps earlier prompts (slots, ``--cache-ram``) and a
first round it has seen before reads next to nothing. Tokens are the server's reported
``usage.completion_tokens``, or one per streamed chunk where it reports none. A server on this
machine competes with the bot for its cores.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import aiohttp

from bench import concurrency, interleave
from bench.common import FACTUAL, SEED, Options, Row, bench_settings, client, median, ratio, running, settled
from bot.settings import DEFAULT_SYSTEM_PROMPT


@dataclass(slots=True)
class Completion:
    text: str
    tokens: int
    """The server's ``usage.completion_tokens``, or one per streamed chunk where it reports none."""
    prompt_tokens: int
    first_token: float
    """Seconds from sending the request to the first content chunk."""


async def chat(
    http: aiohttp.ClientSession, url: str, model: str, messages: list[dict[str, str]], max_tokens: int
) -> Completion:
    """One streamed ``/chat/completions`` request, greedy."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": SEED,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks, reported, prompt = 0, None, 0
    pieces: list[str] = []
    start = time.perf_counter()
    first: float | None = None
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
                prompt = int(usage.get("prompt_tokens", 0))
            for choice in event.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    first = time.perf_counter() - start if first is None else first
                    pieces.append(content)
                    chunks += 1
    took = first if first is not None else time.perf_counter() - start
    return Completion("".join(pieces), reported if reported is not None else chunks, prompt, took)


async def complete(http: aiohttp.ClientSession, url: str, model: str, prompt: str, max_tokens: int) -> int:
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
    return (await chat(http, url, model, messages, max_tokens)).tokens


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


async def interleave_direct(options: Options, url: str, model: str) -> list[Row]:
    """The interleaving benchmark's conversations, each request carrying its whole history (what
    the server keeps of it between turns is its own prompt cache)."""
    conversations, rounds, max_tokens = interleave.shape(options)
    histories = [[{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}] for _ in range(conversations)]
    first_tokens: list[list[float]] = []
    prompt_tokens: list[list[int]] = []
    async with client(fresh=True) as http:
        await complete(http, url, model, "Hello.", 4)
        for turn in range(rounds):
            firsts, prompts = [], []
            for c, history in enumerate(histories):
                history.append({"role": "user", "content": interleave.message(c, turn)})
                answer = await chat(http, url, model, history, max_tokens)
                history.append({"role": "assistant", "content": answer.text})
                firsts.append(answer.first_token)
                prompts.append(answer.prompt_tokens)
            first_tokens.append(firsts)
            prompt_tokens.append(prompts)
    return interleave.rows(
        first_tokens, prompt_tokens, options, bench="external", label="server directly: ", goal=False
    )


async def versus(options: Options, url: str, model: str, max_tokens: int) -> list[Row]:
    """8 at once through the in-process engine against the same through Parley's OpenAI backend
    pointed at the server, side by side: both apps run, and their waves alternate (only the one
    asked generates; the in-process engine is let finish reading ahead first). Each has answered
    the prompts once before, untimed, as in the concurrency runs, where the 8 at once come after 1
    and 4 at once: llama.cpp's server keeps them in its slots, and so does the engine. Measured a minute
    apart, the two figures moved with the machine: one run here gave the in-process 8 at once 195
    tok/s against the backend's 163, the next 161 against 165."""
    repeats = 1 if options.quick else 3
    local = bench_settings(options, "versus-local", max_tokens=256)
    remote = bench_settings(
        options, "versus-openai", max_tokens=256, backend="openai", base_url=url, model=model, concurrency=8
    )
    rates: dict[str, list[float]] = {"local": [], "openai": []}
    async with running(local) as (app, local_url), running(remote) as (_remote, remote_url), client() as http:
        for warm in (local_url, remote_url):  # both have seen the prompts, as in the runs before
            await concurrency.level(http, warm, 8, max_tokens)
            await settled(app)
        for _ in range(repeats):
            for side, side_url in (("local", local_url), ("openai", remote_url)):
                rate, _slowest = await concurrency.level(http, side_url, 8, max_tokens)
                rates[side].append(rate)
                await settled(app)
    mine, theirs = median(rates["local"]), median(rates["openai"])
    share = ratio(mine, theirs)

    def note(side: str) -> str:
        return ", ".join(f"{r:.0f}" for r in rates[side])

    return [
        Row("external", "side by side: in-process 8 at once", mine, "tok/s", note=note("local")),
        Row("external", "side by side: OpenAI backend 8 at once", theirs, "tok/s", note=note("openai")),
        Row("external", "in-process 8 / OpenAI backend 8", share, "x", "> 1", share > 1, f"{repeats} waves each"),
    ]


async def run(options: Options, model: str) -> list[Row]:
    url = options.openai_url
    assert url is not None
    max_tokens = 48 if options.quick else 96
    # The interleaving first: llama.cpp's server keeps prompts in its slots and its RAM prompt cache,
    # and the concurrency run asks the same first questions.
    interleaved = await interleave_direct(options, url, model)
    figures = await direct(options, url, model, max_tokens)
    rows = concurrency.rows(figures, "server directly", max_tokens, bench="external", goal=False)
    rows = [row for row in rows if "slowest" not in row.label] + interleaved
    through = await concurrency.run(
        options, "Parley via OpenAI backend", "external", backend="openai", base_url=url, model=model, concurrency=8
    )
    for row in through:
        row.bench = "external"
    return rows + through + await versus(options, url, model, max_tokens)
