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


def shape(options: Options) -> tuple[int, int, int]:
    """Conversations, rounds and max tokens per reply: the engine's default, 256. Greedy replies end
    on their own well before it (about 50 tokens here), so the last round reads after about 460
    tokens of history, near the issue's ~540; a cap of 48 had it at about 416."""
    return (4, 3, 24) if options.quick else (8, 8, 256)


def message(conversation: int, turn: int) -> str:
    return FACTUAL[conversation % len(FACTUAL)] if turn == 0 else FOLLOW_UPS[(turn - 1) % len(FOLLOW_UPS)]


async def run(options: Options) -> list[Row]:
    conversations, rounds, max_tokens = shape(options)
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
                answer = await ask(http, url, message(c, turn), max_tokens=max_tokens, conversation_id=ids[c])
                ids[c] = answer.conversation_id
                firsts.append(answer.first_token)
                prompts.append(answer.prompt_tokens)
            first_tokens.append(firsts)
            prompt_tokens.append(prompts)
    return rows(first_tokens, prompt_tokens, options)


def rows(
    first_tokens: list[list[float]],
    prompt_tokens: list[list[int]],
    options: Options,
    *,
    bench: str = "interleave",
    label: str = "",
    goal: bool = True,
) -> list[Row]:
    """``goal``: judge the ratio against the bot's goal (1.5x); another server's is not judged."""
    conversations, rounds, max_tokens = shape(options)
    first, last = median(first_tokens[0]), median(first_tokens[-1])
    note = f"{conversations} conversations x {rounds} rounds, {max_tokens} max tokens"
    last_ratio = ratio(last, first)
    wanted, ok = ("<= 1.5", last_ratio <= 1.5) if goal else ("", None)
    return [
        Row(
            bench,
            f"{label}first token, round 1 (median)",
            first,
            "s",
            note=f"~{median(prompt_tokens[0]):.0f} tok",
        ),
        Row(
            bench,
            f"{label}first token, round {rounds} (median)",
            last,
            "s",
            note=f"~{median(prompt_tokens[-1]):.0f} tok",
        ),
        Row(bench, f"{label}round {rounds} / round 1", last_ratio, "x", wanted, ok, note),
    ]
