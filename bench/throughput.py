"""Throughput of the bot against raw llama-cpp-python, in one process and one run.

The same greedy prompt (same messages, same max tokens) is streamed through raw
``Llama.create_chat_completion`` and through Parley's HTTP API (``POST /api/chat``, SSE), taking
turns so that both see the same machine state. Tokens/s counts the reply's tokens (by the model's
tokenizer, the same measure on both sides) over the wall time of the whole request. Prints both
figures and their ratio; the goal is a ratio of at least 0.95.

    .venv/bin/python -m bench.throughput [--runs 5] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import llama_cpp

from bot.app import Parley
from bot.settings import EngineSettings, Settings, WebSettings

PROMPT = "Write a long story about a lighthouse keeper who finds a map."
SEED = 42


def raw_run(llm: llama_cpp.Llama, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, float]:
    start = time.perf_counter()
    pieces = []
    for chunk in llm.create_chat_completion(
        messages,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0.0,
        seed=SEED,
        stream=True,
    ):
        delta = chunk["choices"][0]["delta"]  # type: ignore[index]
        if delta.get("content"):
            pieces.append(delta["content"])
    return "".join(pieces), time.perf_counter() - start


async def api_run(http: aiohttp.ClientSession, url: str, max_tokens: int) -> tuple[str, float]:
    start = time.perf_counter()
    text = ""
    async with http.post(url, json={"message": PROMPT, "max_tokens": max_tokens, "temperature": 0}) as response:
        async for raw in response.content:
            if raw.startswith(b"data: "):
                event = json.loads(raw[6:])
                if event.get("done"):
                    text = event.get("text", "")
    return text, time.perf_counter() - start


async def main(runs: int, max_tokens: int, threads: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            db_path=Path(tmp) / "bench.db",
            engine=EngineSettings(temperature=0.0, seed=SEED, max_tokens=max_tokens, threads=threads),
            web=WebSettings(port=0),
        )
        model_path = str(settings.engine.model_path)
        llm = llama_cpp.Llama(
            model_path,
            n_ctx=settings.engine.n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            seed=SEED,
            verbose=False,
        )
        messages = [{"role": "system", "content": settings.system_prompt}, {"role": "user", "content": PROMPT}]

        def tokens(text: str) -> int:
            return len(llm.tokenize(text.encode(), add_bos=False))

        raw_rates: list[float] = []
        api_rates: list[float] = []
        async with Parley(settings) as app, aiohttp.ClientSession() as http:
            assert app.web is not None
            url = app.web.url + "/api/chat"
            await asyncio.to_thread(raw_run, llm, messages, max_tokens)  # warm-up, both sides
            await api_run(http, url, max_tokens)
            for _ in range(runs):
                text, seconds = await asyncio.to_thread(raw_run, llm, messages, max_tokens)
                raw_rates.append(tokens(text) / seconds)
                text, seconds = await api_run(http, url, max_tokens)
                api_rates.append(tokens(text) / seconds)
        llm.close()

    raw = statistics.median(raw_rates)
    api = statistics.median(api_rates)
    print(f"model: {Path(model_path).name}, {threads} threads, {max_tokens} max tokens, {runs} runs each (median)")
    print(f"raw llama-cpp-python: {raw:7.1f} tokens/s  (runs: {', '.join(f'{r:.1f}' for r in raw_rates)})")
    print(f"Parley HTTP API:      {api:7.1f} tokens/s  (runs: {', '.join(f'{r:.1f}' for r in api_rates)})")
    print(f"ratio API/raw:        {api / raw:7.3f}  (goal: >= 0.95)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.max_tokens, args.threads))
