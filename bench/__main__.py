"""Parley's benchmarks, each figure a ratio measured side by side in one run (``make bench``).

    .venv/bin/python -m bench [--quick] [--only single,concurrency,interleave,restart,memory]
                              [--runs 5] [--threads 2] [--bot-threads N]
                              [--openai-url http://127.0.0.1:8081/v1 --openai-model NAME]

- single: the bot's HTTP API against raw llama-cpp-python streaming, same prompt, greedy; and the
  plainest low-level llama.cpp loop, the ceiling.
- concurrency: total tok/s with 1, 4 and 8 conversations at once through the HTTP API.
- interleave: 8 conversations taking turns for 8 rounds; first-token time, first round and last.
- restart: first-token time of a ~1,000-token conversation's next turn, before and after a restart.
- memory: resident size against model file + the context's KV + the RAM cache cap + 200 MB.
- external (with ``--openai-url``): that server answering directly, and Parley through its OpenAI
  backend; then 8 at once through the in-process engine and through the backend, side by side.

Only one model generates at a time: the benchmarks run one after another, and the single-stream
one alternates between raw llama-cpp-python and the bot. Figures taken while other processes use
the CPU are rough. ``--quick`` is a short smoke run of every benchmark (under two minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import concurrency, external, interleave, memory, restart, single
from bench.common import SKIPPED, Options, Row, Vocabulary, engine_settings, load

NAMES = ("single", "concurrency", "interleave", "restart", "memory", "external")


def table(rows: list[Row]) -> str:
    lines = [f"{'bench':<12} {'figure':<52} {'value':>10}  {'unit':<6} {'goal':<10} {'':<4} note"]
    lines.append("-" * len(lines[0]))
    for row in rows:
        value = "n/a" if row.value is None or math.isnan(row.value) else f"{row.value:.2f}"
        verdict = {True: "ok", False: "MISS", None: ""}[row.ok]
        lines.append(
            f"{row.bench:<12} {row.label:<52} {value:>10}  {row.unit:<6} {row.goal:<10} {verdict:<4} {row.note}"
        )
    return "\n".join(lines)


async def main(options: Options, only: list[str], openai_model: str) -> list[Row]:
    settings = engine_settings()
    assert settings.model_path is not None
    vocabulary = Vocabulary(settings.model_path)
    benches: dict[str, Callable[[], Awaitable[list[Row]]]] = {
        "single": lambda: single.run(options, vocabulary),
        "concurrency": lambda: concurrency.run(options),
        "interleave": lambda: interleave.run(options),
        "restart": lambda: restart.run(options),
        "memory": lambda: memory.run(options),
        "external": lambda: external.run(options, openai_model),
    }
    bot_threads = options.bot_threads or settings.threads
    print(f"model {settings.model_path.name}; single stream {options.threads} threads on both sides, ", end="")
    print(f"the bot {bot_threads} threads elsewhere; {load()}")
    rows: list[Row] = []
    for name in only:
        if name == "external" and options.openai_url is None:
            continue
        started = time.perf_counter()
        print(f"\n== {name}", flush=True)
        try:
            found = await benches[name]()
        except Exception as exc:  # noqa: BLE001 - one failed benchmark must not hide the others' figures
            traceback.print_exc()
            found = [Row(name, f"failed: {type(exc).__name__}: {exc}"[:52], None, note=str(exc)[:200])]
        print(table(found))
        print(f"({time.perf_counter() - started:.0f} s; {load()})", flush=True)
        rows += found
    vocabulary.close()
    return rows


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run of every benchmark")
    parser.add_argument("--only", default=",".join(NAMES), help="comma-separated: " + ",".join(NAMES))
    parser.add_argument("--runs", type=int, default=None, help="single-stream runs per side (default 5; quick 1)")
    parser.add_argument("--threads", type=int, default=2, help="single stream: threads of both sides (default 2)")
    parser.add_argument(
        "--bot-threads", type=int, default=None, help="the other benchmarks: the bot's threads (default: its own)"
    )
    parser.add_argument("--openai-url", default=None, help="an OpenAI-compatible server to measure, e.g. .../v1")
    parser.add_argument("--openai-model", default="default", help="the model name that server expects")
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    runs = args.runs if args.runs is not None else (1 if args.quick else 5)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        options = Options(args.quick, args.threads, args.bot_threads, runs, args.openai_url, Path(tmp))
        rows = asyncio.run(main(options, only, args.openai_model))
    print(f"\n== summary ({time.perf_counter() - started:.0f} s{', quick' if args.quick else ''}; {load()})")
    if SKIPPED.fields:
        print(f"engine settings this revision does not have (left out): {', '.join(SKIPPED.fields)}")
    print(table(rows))


if __name__ == "__main__":
    cli()
