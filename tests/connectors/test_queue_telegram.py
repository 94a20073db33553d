"""The visible queue on Telegram: eight users waiting on one engine, through python-telegram-bot and
the strict Bot API fake (1 call per second per chat, 30 per second per bot, edits that change nothing
refused). Private chats stream as drafts, so the notice is a draft; in groups it is an edit."""

from __future__ import annotations

from tests.conftest import MakeSettings
from tests.connectors.test_telegram import telegram_settings
from tests.fakes.telegram import Chat, FakeTelegram
from tests.support import ScriptedEngine, make_app, queue_position, wait_idle, wait_until

ANSWER = " ".join(f"word{i}" for i in range(12))


async def test_eight_waiting_users_see_their_place_only_go_down_and_telegram_refuses_nothing(
    make_settings: MakeSettings, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    settings = make_settings(
        telegram=telegram_settings(fake),
        web={"enabled": False},
        engine={"max_tokens": 40},
        queue_notice_after=0.5,
    )
    engine = ScriptedEngine(lambda _m: ANSWER, delay=0.08, places=1)
    chats = [Chat(id=6000 + user, type="private") for user in range(8)]
    async with make_app(settings, engine) as app:
        asked = {chat.id: fake.push(chat, f"question {chat.id}", user_id=chat.id) for chat in chats}
        await wait_until(
            lambda: all([m.text for m in fake.replies_to(chat.id, asked[chat.id])] == [ANSWER] for chat in chats),
            timeout=120,
            what="every answer shown",
        )
        await wait_idle(app)

    assert fake.refused() == [], [(c.method, c.refused, c.rule) for c in fake.refused()]
    waited = 0
    seen: list[set[int]] = []
    for chat in chats:
        [reply] = fake.replies_to(chat.id, asked[chat.id])
        drafts = fake.drafts_to(chat.id)
        assert drafts, "a private chat streams as drafts"
        texts = [draft.text for draft in drafts] + [reply.text]
        positions = [p for p in map(queue_position, texts) if p is not None]
        assert positions == sorted(positions, reverse=True), texts
        waited += bool(positions)
        seen.append(set(positions))
        assert texts[-1] == ANSWER
    assert waited >= 6, seen  # the first ones may start before the notice is due
    assert max(len(positions) for positions in seen) >= 3, seen  # the line moved, and it was shown
