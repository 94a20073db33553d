"""Single stream: the bot's HTTP API against raw llama-cpp-python high-level streaming.

The same prompt (the bot's system prompt and one user message), greedy, no repetition penalty on
either side, the same number of threads. Runs alternate between the two and never overlap, so
both see the same machine state: after the bot's turn, the next side waits until the bot's engine
has finished reading that turn's end ahead (:func:`settled`). Each figure is the median of the
runs. Tokens/s counts the reply's tokens (by the model's own tokenizer, the same measure on both
sides) over the whole request's wall time, prompt included.

A third side, printed for reference, is the ceiling: llama.cpp's low-level API driven by the
plainest loop (one context of one sequence, decode one token, sample greedy, repeat), through the
same wrappers as the engine. No bot can stream faster than it on this machine, so ``loop / raw``
is the most that ``bot / raw`` can be here.

The raw and loop sides run in child processes (``python -m bench.single --raw`` or ``--loop``,
one run per line on their stdin). Two llama.cpp contexts in one process slow each other down even when they take turns
(each calling thread keeps its own OpenMP team): measured here, raw streaming fell from about 76
to 29 tok/s once the bot's engine had run in the same process, and the engine from about 85 to 32.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Options, Row, Vocabulary, ask, bench_settings, client, median, ratio, running, settled

PROMPT = "Write a long story about a lighthouse keeper who finds a map."


def worker() -> None:
    """A child side (``--raw`` or ``--loop``): load the model once, then answer each
    ``{"messages", "max_tokens"}`` line with ``{"text", "seconds"}``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=("raw", "loop"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, required=True)
    args = parser.parse_args()
    run_one, close = (raw_side if args.side == "raw" else loop_side)(args.model, args.threads, args.n_ctx)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        text, seconds = run_one(job["messages"], job["max_tokens"])
        print(json.dumps({"text": text, "seconds": seconds}), flush=True)
    close()


Runner = Callable[[list[dict[str, str]], int], tuple[str, float]]


def raw_side(model: str, threads: int, n_ctx: int) -> tuple[Runner, Callable[[], None]]:
    import llama_cpp

    llm = llama_cpp.Llama(model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, seed=42, verbose=False)
    return (lambda messages, max_tokens: raw_run(llm, messages, max_tokens)), llm.close


def loop_side(model_path: str, threads: int, n_ctx: int) -> tuple[Runner, Callable[[], None]]:
    """The ceiling: one sequence, one token per ``llama_decode``, greedy, no Python beyond the loop.
    Like ``Llama`` (and the bot), it keeps the KV of the prompt it read last and reads only what differs."""
    from bot.engine import ChatMessage
    from engine.llama import Batch, Context, Model, Sampler

    model = Model(Path(model_path))
    context = Context(model, n_ctx_seq=n_ctx, n_seq=1, n_batch=512, threads=threads)
    batch = Batch(512)
    held: list[int] = []

    def run_one(messages: list[dict[str, str]], max_tokens: int) -> tuple[str, float]:
        start = time.perf_counter()
        tokens = model.prompt([ChatMessage(m["role"], m["content"]) for m in messages])  # type: ignore[arg-type]
        keep = 0
        while keep < min(len(held), len(tokens) - 1) and held[keep] == tokens[keep]:
            keep += 1
        context.truncate(0, keep)
        held[:] = tokens
        sampler = Sampler(model, temperature=0.0, top_p=1.0, seed=None, penalty=1.0, last_n=0)
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces = []
        try:
            for first in range(keep, len(tokens), 512):
                batch.clear()
                chunk = tokens[first : first + 512]
                for i, token in enumerate(chunk):
                    index = batch.add(token, first + i, 0, logits=first + i == len(tokens) - 1)
                if context.decode(batch) != 0:
                    raise RuntimeError("llama_decode failed on the prompt")
            position = len(tokens)
            for _ in range(max_tokens):
                token = sampler.sample(context, index)
                if model.is_end(token):
                    break
                pieces.append(text.decode(model.piece(token)))
                batch.clear()
                index = batch.add(token, position, 0, logits=True)
                position += 1
                if context.decode(batch) != 0:
                    raise RuntimeError("llama_decode failed")
        finally:
            sampler.close()
        return "".join(pieces) + text.decode(b"", final=True), time.perf_counter() - start

    def close() -> None:
        batch.close()
        context.close()
        model.close()

    return run_one, close


class ChildSide:
    """A child process that answers with raw llama-cpp-python or the low-level loop."""

    def __init__(self, child: asyncio.subprocess.Process) -> None:
        self.child = child

    @classmethod
    async def start(cls, side: str, model: str, threads: int, n_ctx: int) -> ChildSide:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.single",
            "--side",
            side,
            "--model",
            model,
            "--threads",
            str(threads),
            "--n-ctx",
            str(n_ctx),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        found = cls(child)
        await found._line()
        return found

    async def _line(self) -> dict[str, object]:
        assert self.child.stdout is not None
        line = await self.child.stdout.readline()
        if not line:
            raise RuntimeError("a single-stream child process ended")
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
    n_ctx = settings.engine.n_ctx
    raw = await ChildSide.start("raw", str(vocabulary.path), options.threads, n_ctx)
    loop = await ChildSide.start("loop", str(vocabulary.path), options.threads, n_ctx)
    messages = [{"role": "system", "content": settings.system_prompt}, {"role": "user", "content": PROMPT}]
    rates: dict[str, list[float]] = {"raw": [], "bot": [], "loop": []}
    try:
        async with running(settings) as (app, url), client() as http:
            await raw.run(messages, max_tokens)  # warm-up, every side
            await loop.run(messages, max_tokens)
            await ask(http, url, PROMPT, max_tokens=max_tokens)
            await settled(app)
            for _ in range(options.runs):
                for name, side in (("raw", raw), ("loop", loop)):
                    text, seconds = await side.run(messages, max_tokens)
                    rates[name].append(vocabulary.tokens(text) / seconds)
                answer = await ask(http, url, PROMPT, max_tokens=max_tokens)
                rates["bot"].append(vocabulary.tokens(answer.text) / answer.seconds)
                await settled(app)
    finally:
        await raw.close()
        await loop.close()
    figures = {name: median(values) for name, values in rates.items()}

    def note(name: str) -> str:
        return ", ".join(f"{r:.0f}" for r in rates[name])

    bot_raw = ratio(figures["bot"], figures["raw"])
    runs = f"{options.runs} runs, {max_tokens} max tokens"
    return [
        Row("single", "raw Llama streaming", figures["raw"], "tok/s", note=note("raw")),
        Row("single", "bot HTTP API", figures["bot"], "tok/s", note=note("bot")),
        Row("single", "bot / raw", bot_raw, "x", ">= 1.25", bot_raw >= 1.25, runs),
        Row("single", "low-level loop (the ceiling, no bot)", figures["loop"], "tok/s", note=note("loop")),
        Row("single", "bot / low-level loop", ratio(figures["bot"], figures["loop"]), "x"),
        Row(
            "single",
            "low-level loop / raw (the most bot / raw can be)",
            ratio(figures["loop"], figures["raw"]),
            "x",
        ),
    ]


if __name__ == "__main__":
    worker()
