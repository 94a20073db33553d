"""Single stream: the bot's HTTP API against raw llama-cpp-python high-level streaming.

The same prompt (the bot's system prompt and one user message), greedy, no repetition penalty on
either side, the same number of threads. Runs alternate between the two and never overlap, so
both see the same machine state; each figure is the median of the runs. Tokens/s counts the reply's
tokens (by the model's own tokenizer, the same measure on both sides) over the whole request's wall
time, prompt included.

The raw side runs in a child process (``python -m bench.single --raw``, one run per line on its
stdin). Two llama.cpp contexts in one process slow each other down even when they take turns
(each calling thread keeps its own OpenMP team): measured here, raw streaming fell from about 76
to 29 tok/s once the bot's engine had run in the same process, and the engine from about 85 to 32.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from bench.common import Options, Row, Vocabulary, ask, bench_settings, client, median, ratio, running

PROMPT = "Write a long story about a lighthouse keeper who finds a map."


def raw_worker() -> None:
    """The raw side: load the model once, then answer each ``{"messages", "max_tokens"}`` line."""
    import llama_cpp

    parser = argparse.ArgumentParser()
    parser.add_argument("--raw", action="store_true")
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, required=True)
    args = parser.parse_args()
    llm = llama_cpp.Llama(
        args.model, n_ctx=args.n_ctx, n_threads=args.threads, n_threads_batch=args.threads, seed=42, verbose=False
    )
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        text, seconds = raw_run(llm, job["messages"], job["max_tokens"])
        print(json.dumps({"text": text, "seconds": seconds}), flush=True)
    llm.close()


class RawSide:
    """The child process that streams with raw llama-cpp-python."""

    def __init__(self, child: asyncio.subprocess.Process) -> None:
        self.child = child

    @classmethod
    async def start(cls, model: str, threads: int, n_ctx: int) -> RawSide:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.single",
            "--raw",
            "--model",
            model,
            "--threads",
            str(threads),
            "--n-ctx",
            str(n_ctx),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        side = cls(child)
        await side._line()
        return side

    async def _line(self) -> dict[str, object]:
        assert self.child.stdout is not None
        line = await self.child.stdout.readline()
        if not line:
            raise RuntimeError("the raw llama-cpp-python process ended")
        found: dict[str, object] = json.loads(line)
        return found

    async def run(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, float]:
        assert self.child.stdin is not None
        self.child.stdin.write((json.dumps({"messages": messages, "max_tokens": max_tokens}) + "\n").encode())
        await self.child.stdin.drain()
        answer = await self._line()
        return str(answer["text"]), float(answer["seconds"])  # type: ignore[arg-type]

    async def close(self) -> None:
        if self.child.stdin is not None:
            self.child.stdin.close()
        await self.child.wait()


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
    max_tokens = 48 if options.quick else 128
    settings = bench_settings(options, "single", max_tokens=max_tokens, repeat_penalty=1.0, threads=options.threads)
    side = await RawSide.start(str(vocabulary.path), options.threads, settings.engine.n_ctx)
    messages = [{"role": "system", "content": settings.system_prompt}, {"role": "user", "content": PROMPT}]
    raw_rates: list[float] = []
    bot_rates: list[float] = []
    try:
        async with running(settings) as (_app, url), client() as http:
            await side.run(messages, max_tokens)  # warm-up, both sides
            await ask(http, url, PROMPT, max_tokens=max_tokens)
            for _ in range(options.runs):
                text, seconds = await side.run(messages, max_tokens)
                raw_rates.append(vocabulary.tokens(text) / seconds)
                answer = await ask(http, url, PROMPT, max_tokens=max_tokens)
                bot_rates.append(vocabulary.tokens(answer.text) / answer.seconds)
    finally:
        await side.close()
    raw, bot = median(raw_rates), median(bot_rates)
    runs = f"{options.runs} runs, {max_tokens} max tokens"
    return [
        Row("single", "raw Llama streaming", raw, "tok/s", note=", ".join(f"{r:.0f}" for r in raw_rates)),
        Row("single", "bot HTTP API", bot, "tok/s", note=", ".join(f"{r:.0f}" for r in bot_rates)),
        Row("single", "bot / raw", ratio(bot, raw), "x", ">= 1.25", ratio(bot, raw) >= 1.25, runs),
    ]


if __name__ == "__main__":
    raw_worker()
