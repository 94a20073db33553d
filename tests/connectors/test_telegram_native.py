"""Telegram's native streaming: drafts (``sendMessageDraft``) in private chats, edits elsewhere.

Real python-telegram-bot against the wire-level fake, which records every draft and refuses what
the Bot API refuses. A draft is only a preview: each message of a reply must end as one
``sendMessage`` with its final text.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bot.conversation import ConversationKey, Destination
from bot.settings import Settings, TelegramSettings
from bot.store import TurnStatus
from connectors.telegram.connector import DraftStream, TelegramConnector
from connectors.telegram.render import to_html
from tests.conftest import MakeSettings
from tests.connectors.conftest import essay
from tests.fakes.telegram import DRAFT, TOKEN, Chat, FakeTelegram, parse_html
from tests.support import ScriptedEngine, make_app, stored_turns, wait_reply, wait_until

PRIVATE = Chat(id=42, type="private")
TO_PRIVATE = Destination(channel=str(PRIVATE.id))
GROUP = Chat(id=-1001, type="supergroup", title="community")
EDIT_INTERVAL = 1.0


@pytest.fixture
def fake(fake_telegram: FakeTelegram) -> FakeTelegram:
    return fake_telegram


def settings_for(make_settings: MakeSettings, fake: FakeTelegram, *, engine: Any = None, **telegram: Any) -> Settings:
    options = {"token": TOKEN, "base_url": fake.url, "poll_timeout": 1, "group_edit_interval": 1.0} | telegram
    return make_settings(
        telegram=TelegramSettings(edit_interval=EDIT_INTERVAL, **options), web={"enabled": False}, engine=engine or {}
    )


def private_key() -> ConversationKey:
    return ConversationKey("telegram", str(PRIVATE.id), None, str(PRIVATE.id))


def calls(fake: FakeTelegram, method: str, chat: Chat) -> list[Any]:
    return [c for c in fake.calls if c.method == method and c.chat == chat.id]


def slow(words: int, delay: float = 0.05) -> ScriptedEngine:
    """An engine writing ``words`` words over ``words * delay`` seconds: long enough to stream."""
    return ScriptedEngine(lambda _: essay(words), delay=delay)


async def test_private_reply_streams_as_drafts_then_one_final_message(
    make_settings: MakeSettings, fake: FakeTelegram
) -> None:
    async with make_app(settings_for(make_settings, fake, engine={"max_tokens": 80}), slow(60)) as app:
        asked = fake.push(PRIVATE, "Tell me a long story.")
        turn = await wait_reply(app.store, private_key())
        await wait_until(lambda: fake.replies_to(PRIVATE.id, asked), what="the final message")
    assert turn.status is TurnStatus.COMPLETE
    assert turn.text == essay(60)
    (message,) = fake.replies_to(PRIVATE.id, asked)
    assert message.text == parse_html(to_html(turn.text))
    assert message.edits == 0
    assert turn.message_ids == (str(message.message_id),)
    assert calls(fake, "editMessageText", PRIVATE) == []
    (final,) = calls(fake, "sendMessage", PRIVATE)  # one message, sent once, after every draft
    drafts = fake.drafts_to(PRIVATE.id)
    assert drafts[0].text == ""  # "Thinking..." first
    assert all(d.at < final.at for d in drafts)
    assert len({d.draft_id for d in drafts}) == 1
    assert drafts[0].draft_id != 0
    # The visible text changed at least twice as often as edits (one a second) would have allowed.
    changes = [b for a, b in itertools.pairwise(drafts) if a.text != b.text]
    span = final.at - drafts[0].at
    assert span > 2.0, span
    assert len(changes) >= 2 * span / EDIT_INTERVAL, (len(changes), span)
    assert all(changes[i].text.startswith(changes[i - 1].text) for i in range(1, len(changes)))
    assert fake.visible_draft(PRIVATE.id) is None  # the message replaced the preview
    assert fake.refused() == []


async def test_a_group_reply_still_streams_by_editing(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    async with make_app(settings_for(make_settings, fake, engine={"max_tokens": 80}), slow(40)) as app:
        asked = fake.push(GROUP, "@parley_test_bot tell me a story", user_id=7)
        key = ConversationKey("telegram", str(GROUP.id), None, "7")
        turn = await wait_reply(app.store, key)
        await wait_until(lambda: fake.replies_to(GROUP.id, asked), what="the reply")
    assert turn.text == essay(40)
    (message,) = fake.replies_to(GROUP.id, asked)
    assert message.edits >= 1
    assert message.text == parse_html(to_html(turn.text))
    assert [c for c in fake.calls if c.method == DRAFT] == []
    assert fake.refused() == []


async def test_refused_drafts_complete_with_edits_and_are_not_tried_again(
    make_settings: MakeSettings, fake: FakeTelegram
) -> None:
    fake.refuse_drafts = True  # a self-hosted Bot API server from before sendMessageDraft
    async with make_app(settings_for(make_settings, fake, engine={"max_tokens": 80}), slow(30)) as app:
        first = fake.push(PRIVATE, "Tell me a story.")
        await wait_reply(app.store, private_key())
        second = fake.push(PRIVATE, "And another one.")
        await wait_reply(app.store, private_key(), replies=2)
        turns = await stored_turns(app.store, private_key())
    for asked, turn in ((first, turns[1]), (second, turns[3])):
        assert turn.status is TurnStatus.COMPLETE
        (message,) = fake.replies_to(PRIVATE.id, asked)
        assert message.text == parse_html(to_html(turn.text)) == parse_html(to_html(essay(30)))
        assert message.edits >= 1
    refused = fake.refused()
    assert [(c.method, c.status) for c in refused] == [(DRAFT, 404)]  # remembered: the second reply edited at once
    assert fake.drafts == []


async def test_drafts_refused_mid_reply_continue_with_edits_from_where_they_were(
    make_settings: MakeSettings, fake: FakeTelegram
) -> None:
    seen: list[str] = []

    def after_some_text(params: dict[str, Any]) -> bool:
        seen.append(str(params.get("text", "")))
        return len(seen) > 3

    fake.fail(DRAFT, code=400, description="Bad Request: method is unavailable", when=after_some_text)
    async with make_app(settings_for(make_settings, fake, engine={"max_tokens": 80}), slow(60)) as app:
        asked = fake.push(PRIVATE, "Tell me a long story.")
        turn = await wait_reply(app.store, private_key())
        await wait_until(lambda: fake.replies_to(PRIVATE.id, asked), what="the reply")
        connector = app.connectors[0]
        assert isinstance(connector, TelegramConnector)
        assert connector.native_stream(TO_PRIVATE) is None  # the refusal is remembered
    assert turn.status is TurnStatus.COMPLETE
    (message,) = fake.replies_to(PRIVATE.id, asked)
    assert message.text == parse_html(to_html(essay(60)))
    assert message.edits >= 1
    (sent,) = calls(fake, "sendMessage", PRIVATE)
    last_draft = fake.drafts_to(PRIVATE.id)[-1]
    assert last_draft.text  # some text was streamed as drafts before the refusal ...
    assert parse_html(str(sent.params["text"])).startswith(last_draft.text)  # ... and the message went on from it
    assert [c.method for c in fake.refused()] == [DRAFT]


async def test_a_long_private_reply_rolls_over_into_messages_with_their_own_drafts(
    make_settings: MakeSettings, fake: FakeTelegram
) -> None:
    settings = settings_for(make_settings, fake, engine={"max_tokens": 1000}, max_message_length=1000)
    async with make_app(settings, ScriptedEngine(lambda _: essay(400), delay=0.005)) as app:
        asked = fake.push(PRIVATE, "Write a long essay.")
        turn = await wait_reply(app.store, private_key())
        await wait_until(lambda: len(turn.message_ids) == len(fake.replies_to(PRIVATE.id, asked)), what="all parts")
    assert turn.status is TurnStatus.COMPLETE
    sent = fake.replies_to(PRIVATE.id, asked)
    assert len(sent) >= 3
    assert all(len(m.text) <= 1000 for m in sent)
    assert " ".join(m.text for m in sent).split() == turn.text.split()
    assert turn.message_ids == tuple(str(m.message_id) for m in sent)
    assert calls(fake, "editMessageText", PRIVATE) == []
    ids = [d.draft_id for d in fake.drafts_to(PRIVATE.id)]
    assert len(set(ids)) == len(sent)  # a new draft for each message
    assert 0 not in ids
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls(fake, "sendMessage", PRIVATE))]
    assert all(gap >= fake.min_gap for gap in gaps), gaps
    assert fake.refused() == []


async def test_native_streaming_can_be_turned_off(make_settings: MakeSettings, fake: FakeTelegram) -> None:
    settings = settings_for(make_settings, fake, native_streaming=False)
    async with make_app(settings, slow(30)) as app:
        asked = fake.push(PRIVATE, "Tell me a story.")
        turn = await wait_reply(app.store, private_key())
        await wait_until(lambda: fake.replies_to(PRIVATE.id, asked), what="the reply")
    assert turn.text == essay(30)
    assert fake.replies_to(PRIVATE.id, asked)[0].edits >= 1
    assert fake.drafts == []


async def test_an_idle_draft_is_sent_again_before_telegram_drops_it(
    make_settings: MakeSettings, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DraftStream, "refresh", 0.3)  # Telegram keeps a draft about 30 s
    engine = ScriptedEngine(lambda _: "one two", delay=1.0)
    async with make_app(settings_for(make_settings, fake), engine) as app:
        asked = fake.push(PRIVATE, "Take your time.")
        await wait_reply(app.store, private_key())
        await wait_until(lambda: fake.replies_to(PRIVATE.id, asked), what="the reply")
    drafts = fake.drafts_to(PRIVATE.id)
    assert [d.text for d in drafts].count("") >= 2  # "Thinking..." kept up while the model was silent
    gaps = [b.at - a.at for a, b in itertools.pairwise(drafts)]
    assert max(gaps) < 0.9, gaps
    assert fake.refused() == []


async def test_draft_ids_are_unique_and_never_zero() -> None:
    connector = TelegramConnector(TelegramSettings(token=TOKEN))
    connector._draft_id = 2**31 - 3  # near the end of the range: it wraps past 0
    ids = []
    for _ in range(4):
        stream = connector.native_stream(TO_PRIVATE)
        assert isinstance(stream, DraftStream)
        ids.append(stream.draft_id)
    assert len(set(ids)) == 4
    assert 0 not in ids
    assert connector.native_stream(Destination(channel=str(GROUP.id), is_group=True)) is None


async def test_a_429_on_a_draft_is_waited_out_and_is_no_refusal(
    make_settings: MakeSettings, fake: FakeTelegram
) -> None:
    fake.fail(DRAFT, code=429, description="Too Many Requests: retry after 1", parameters={"retry_after": 1})
    async with make_app(settings_for(make_settings, fake, engine={"max_tokens": 80}), slow(40)) as app:
        asked = fake.push(PRIVATE, "Tell me a story.")
        turn = await wait_reply(app.store, private_key())
        await wait_until(lambda: fake.replies_to(PRIVATE.id, asked), what="the reply")
    (injected,) = fake.refused("injected")
    later = [d for d in fake.drafts_to(PRIVATE.id) if d.at > injected.at]
    assert later, "drafts went on after the wait"
    assert later[0].at - injected.at >= 1.0
    (message,) = fake.replies_to(PRIVATE.id, asked)
    assert message.edits == 0
    assert message.text == parse_html(to_html(turn.text))
