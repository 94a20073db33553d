"""Concurrency: total tok/s with 1, 4 and 8 conversations streaming at once through the HTTP API.

Every level answers the same eight short factual prompts, each in a new conversation: one at a
time, in two waves of four, or all eight at once. Total tok/s is the completion tokens the API
reported over the waves' wall time. Default engine settings apart from greedy sampling (and
``--bot-threads`` when given). Also prints the slowest first token at eight at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bench.common import FACTUAL, Answer, Options, Row, ask, bench_settings, client, median, ratio, running

LEVELS = (1, 4, 8)


async def wave(
    http: aiohttp.ClientSession, url: str, prompts: tuple[str, ...], max_tokens: int
) -> tuple[list[Answer], float]:
    start = time.perf_counter()
    answers = await asyncio.gather(*(ask(http, url, p, max_tokens=max_tokens) for p in prompts))
    return list(answers), time.perf_counter() - start


async def level(http: aiohttp.ClientSession, url: str, at_once: int, max_tokens: int) -> tuple[float, float]:
    """Total tok/s over all prompts, and the slowest time to first token."""
    tokens, seconds, slowest = 0, 0.0, 0.0
    for first in range(0, len(FACTUAL), at_once):
        answers, took = await wave(http, url, FACTUAL[first : first + at_once], max_tokens)
        tokens += sum(a.completion_tokens for a in answers)
        seconds += took
        slowest = max([slowest, *(a.first_token for a in answers)])
    return tokens / seconds, slowest


async def measure(url: str, options: Options, max_tokens: int) -> dict[int, tuple[float, float]]:
    """Median total tok/s and slowest first token per level, levels interleaved across repeats."""
    repeats = 1 if options.quick else 2
    rates: dict[int, list[float]] = {n: [] for n in LEVELS}
    firsts: dict[int, list[float]] = {n: [] for n in LEVELS}
    async with client() as http:
        await ask(http, url, FACTUAL[0], max_tokens=8)  # warm-up
        for _ in range(repeats):
            for n in LEVELS:
                rate, first = await level(http, url, n, max_tokens)
                rates[n].append(rate)
                firsts[n].append(first)
    return {n: (median(rates[n]), median(firsts[n])) for n in LEVELS}


async def run(options: Options, label: str = "bot HTTP API", name: str = "concurrency", **engine: Any) -> list[Row]:
    max_tokens = 48 if options.quick else 96
    settings = bench_settings(options, name, max_tokens=max(max_tokens, 256), **engine)
    async with running(settings) as (_app, url):
        figures = await measure(url, options, max_tokens)
    return rows(figures, label, max_tokens, goal=name == "concurrency")


def rows(
    figures: dict[int, tuple[float, float]], label: str, max_tokens: int, *, bench: str = "concurrency", goal: bool
) -> list[Row]:
    """``goal``: judge 8 / 1 against the bot's goal (1.5x); figures of other servers are not judged."""
    one, four, eight = (figures[n][0] for n in LEVELS)
    note = f"{max_tokens} max tokens, greedy"
    return [
        Row(bench, f"{label}: 1 at once", one, "tok/s", note=note),
        Row(bench, f"{label}: 4 at once", four, "tok/s"),
        Row(bench, f"{label}: 8 at once", eight, "tok/s"),
        Row(bench, f"{label}: 4 / 1", ratio(four, one), "x"),
        Row(bench, f"{label}: 8 / 1", ratio(eight, one), "x", *((">= 1.5", ratio(eight, one) >= 1.5) if goal else ())),
        Row(bench, f"{label}: slowest first token at 8", figures[8][1], "s"),
    ]
