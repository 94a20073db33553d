"""Interleaving: eight conversations taking turns for eight rounds through the HTTP API.

Each round, every conversation in turn sends its next message and reads the whole reply before the
next conversation speaks, so each turn's time to first token shows what its history cost to read
again. With a KV cache per conversation only the new message is read; without one the whole history
is. Prints the median time to first token in the first and the last round and their ratio.
"""

from __future__ import annotations

from bench.common import FACTUAL, Options, Row, ask, bench_settings, client, median, ratio, running

FOLLOW_UPS = (
    "Tell me one more fact about that.",
    "Why is that so?",
    "Say it again in simpler words.",
    "What is a common mistake people make about it?",
    "How would you explain it to a child?",
    "Give me an example.",
    "What else is related to it?",
)


async def run(options: Options) -> list[Row]:
    conversations, rounds, max_tokens = (4, 3, 24) if options.quick else (8, 8, 48)
    settings = bench_settings(options, "interleave", max_tokens=256)
    ids: list[str | None] = [None] * conversations
    first_tokens: list[list[float]] = []
    prompt_tokens: list[list[int]] = []
    async with running(settings) as (_app, url), client() as http:
        # Warm up in a conversation of its own, then /reset it: only the measured ones hold KV.
        warm = await ask(http, url, "Hello.", max_tokens=4)
        await ask(http, url, "/reset", max_tokens=1, conversation_id=warm.conversation_id)
        for turn in range(rounds):
            firsts, prompts = [], []
            for c in range(conversations):
                message = FACTUAL[c % len(FACTUAL)] if turn == 0 else FOLLOW_UPS[(turn - 1) % len(FOLLOW_UPS)]
                answer = await ask(http, url, message, max_tokens=max_tokens, conversation_id=ids[c])
                ids[c] = answer.conversation_id
                firsts.append(answer.first_token)
                prompts.append(answer.prompt_tokens)
            first_tokens.append(firsts)
            prompt_tokens.append(prompts)
    first, last = median(first_tokens[0]), median(first_tokens[-1])
    shape = f"{conversations} conversations x {rounds} rounds, {max_tokens} max tokens"
    return [
        Row(
            "interleave",
            "first token, round 1 (median)",
            first,
            "s",
            note=f"~{median(prompt_tokens[0]):.0f} tok",
        ),
        Row(
            "interleave",
            f"first token, round {rounds} (median)",
            last,
            "s",
            note=f"~{median(prompt_tokens[-1]):.0f} tok",
        ),
        Row(
            "interleave",
            f"round {rounds} / round 1",
            ratio(last, first),
            "x",
            "<= 1.5",
            ratio(last, first) <= 1.5,
            shape,
        ),
    ]
