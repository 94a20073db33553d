"""The visible queue on Discord: eight users in their DMs waiting on one engine, through discord.py
and the strict fake (5 message writes per 5 s per channel, sliding; a 429 is a failure)."""

from __future__ import annotations

from tests.conftest import MakeSettings
from tests.connectors.test_discord import discord_settings
from tests.fakes.discord import FakeDiscord
from tests.support import ScriptedEngine, make_app, queue_position, wait_idle, wait_until

ANSWER = "Here is your answer, in short."
WINDOW = 4.9  # the bucket is 5 per 5 s; calls paced exactly 5 s apart may land a few ms closer


async def test_eight_users_see_their_place_only_go_down_within_discords_buckets(
    make_settings: MakeSettings, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    settings = make_settings(
        discord=discord_settings(fake),
        web={"enabled": False},
        engine={"max_tokens": 20},
        queue_notice_after=0.5,
    )
    engine = ScriptedEngine(lambda _m: ANSWER, delay=0.2, places=1)
    async with make_app(settings, engine) as app:
        for user in range(8):
            await fake.user_says(f"question {user}", user=(str(4000 + user), f"user{user}"))
        await wait_until(lambda: len(engine.prompts) == 8, timeout=120, what="every question asked")
        await wait_idle(app, timeout=180)

    dms = {str(9_000_000 + 4000 + user) for user in range(8)}
    assert [c for c in fake.calls if c.status == 429] == []
    assert all(fake.max_edits_in_window(dm, WINDOW) <= 5 for dm in dms)
    shown: dict[str, list[str]] = {}
    for call in fake.calls:
        if call.channel not in dms or call.status != 200 or call.method not in {"POST", "PATCH"}:
            continue
        if call.method == "POST" and call.message:
            shown[call.message] = [call.body.get("content", "")]
        elif call.method == "PATCH" and call.message in shown:
            shown[call.message].append(call.body.get("content", ""))
    assert len(shown) == 8
    waited = 0
    for texts in shown.values():
        positions = [p for p in map(queue_position, texts) if p is not None]
        assert positions == sorted(positions, reverse=True), texts
        waited += bool(positions)
        assert texts[-1] == ANSWER, texts
    assert waited >= 6, shown
    assert max(len({queue_position(t) for t in texts} - {None}) for texts in shown.values()) >= 3, shown
