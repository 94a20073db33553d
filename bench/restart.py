"""Restart: the next turn of a conversation with a ~1,000-token history, before and after a restart.

A conversation is grown through the HTTP API until its prompt holds about 1,000 tokens. Then its
next turn is timed (to the first token) three times: in the running app; in a new app on the same
database and ``PARLEY_ENGINE__KV_CACHE_DIR`` after the first one stopped; and, for reference, in a
new app without the disk cache, which has to read the whole history again. Each app first answers
a one-word conversation of its own, so one-time start-up costs stay out of the figures.
"""

from __future__ import annotations

from typing import Any

from bench.common import Answer, Options, Row, ask, bench_settings, client, has_field, running

NOTE = (
    "Note {n}: the keeper of the lighthouse on the northern cape wrote that on day {n} the wind came from the "
    "{wind}, the lamp burned {hours} hours, a ship called the {ship} passed at dawn, and the gulls were quiet. "
    "He mended a net, counted {count} stairs to the lamp room, and read two chapters of an old atlas. "
)
WINDS = ("north", "east", "south", "west")
SHIPS = ("Aurora", "Beacon", "Cormorant", "Dauntless", "Endeavour", "Fulmar")


def notes(first: int, count: int) -> str:
    return "".join(
        NOTE.format(n=n, wind=WINDS[n % 4], hours=8 + n % 5, ship=SHIPS[n % 6], count=100 + 7 * n)
        for n in range(first, first + count)
    )


async def next_turn(settings: Any, conversation_id: str, message: str) -> Answer:
    async with running(settings) as (_app, url), client() as http:
        await ask(http, url, "Hi.", max_tokens=1)
        return await ask(http, url, message, max_tokens=16, conversation_id=conversation_id)


async def run(options: Options) -> list[Row]:
    target = 400 if options.quick else 1000
    cache_dir = options.workdir / "kv-cache"
    cached = bench_settings(options, "restart", max_tokens=256, kv_cache_dir=cache_dir)
    async with running(cached) as (_app, url), client() as http:
        answer = await ask(http, url, "Remember these notes. " + notes(0, 4), max_tokens=16)
        conversation, n = answer.conversation_id, 4
        while answer.prompt_tokens + answer.completion_tokens < target - 60:
            answer = await ask(http, url, notes(n, 4), max_tokens=16, conversation_id=conversation)
            n += 4
        before = await ask(http, url, "Which ship passed on day 2?", max_tokens=16, conversation_id=conversation)
    after = await next_turn(cached, conversation, "Which ship passed on day 3?")
    cold = bench_settings(options, "restart", max_tokens=256, kv_cache_dir=None)
    reread = await next_turn(cold, conversation, "Which ship passed on day 4?")
    note = "" if has_field("kv_cache_dir") else "this engine has no kv_cache_dir: nothing survives a restart"
    return [
        Row("restart", "first token before the restart", before.first_token, "s", note=f"{before.prompt_tokens} tok"),
        Row(
            "restart",
            "first token after a restart (disk cache)",
            after.first_token,
            "s",
            "<= 0.5 s",
            after.first_token <= 0.5,
            f"{after.prompt_tokens} tok; {note}".rstrip("; "),
        ),
        Row(
            "restart",
            "first token, history re-read (no cache)",
            reread.first_token,
            "s",
            note=f"{reread.prompt_tokens} tok",
        ),
        Row("restart", "re-read / after restart", reread.first_token / max(after.first_token, 1e-9), "x"),
    ]
