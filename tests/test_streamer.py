"""The reply streamer against a recording connector and scripted token streams."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.connector import ConnectorLimits, NativeStream, SentMessage
from bot.conversation import Destination
from bot.errors import EngineError, MessageTooLong, NativeRefused
from bot.pacing import Pacing
from bot.splitting import open_fence
from bot.streamer import EMPTY_REPLY, PLACEHOLDER, ReplyStreamer
from tests.support import Call, RecordingConnector, scripted

DEST = Destination(channel="c1")


def roomy() -> RecordingConnector:
    """A connector whose limit no test reply reaches."""
    return RecordingConnector(limits=ConnectorLimits(max_message_length=4000, pacing=Pacing(min_interval=0.05)))


def words(n: int) -> list[str]:
    return [f"word{i} " for i in range(n)]


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


async def test_placeholder_then_paced_coalesced_edits_and_exact_final_text() -> None:
    connector = roomy()
    tokens = words(60)
    streamer = ReplyStreamer(connector, DEST)
    await streamer.run(scripted(tokens, delay=0.005))

    assert connector.calls[0].kind == "send"
    assert connector.calls[0].text == PLACEHOLDER
    edits = [c for c in connector.calls if c.kind == "edit"]
    assert edits, "at least one edit"
    # Coalescing: far fewer edits than tokens.
    assert len(edits) < len(tokens) / 3
    # Pacing: no two calls to the channel closer than the minimum interval.
    gaps = [b.at - a.at for a, b in zip(connector.calls, connector.calls[1:], strict=False)]
    assert min(gaps) >= connector.limits.pacing.min_interval - 0.005
    # No identical consecutive edits of a message.
    assert all(a.text != b.text for a, b in itertools.pairwise(edits))
    assert connector.messages() == ["".join(tokens).rstrip()]
    assert streamer.message_ids == ("1",)


async def test_rolls_over_before_the_limit_and_keeps_every_word() -> None:
    connector = RecordingConnector()
    tokens = words(150)  # ~1,100 characters with a 200-character limit
    streamer = ReplyStreamer(connector, DEST)
    await streamer.run(scripted(tokens))

    messages = connector.messages()
    assert len(messages) >= 5
    assert all(len(m) <= connector.limits.max_message_length for m in messages)
    assert not connector.rejected
    assert squash(" ".join(messages)) == squash("".join(tokens))
    assert len(streamer.message_ids) == len(messages)


async def test_rollover_never_leaves_a_code_block_open() -> None:
    connector = RecordingConnector()
    code = "".join(f"    value_{i} = compute({i})\n" for i in range(30))
    text = "Here is the code:\n\n```python\n" + code + "```\n\nThat is all."
    await ReplyStreamer(connector, DEST).run(scripted(re.findall(r"\S+\s*", text)))

    messages = connector.messages()
    assert len(messages) >= 3
    for message in messages:
        assert open_fence(message) is None, message
        assert len(message) <= connector.limits.max_message_length
    body = "".join(messages)
    for i in range(30):
        assert f"value_{i} = compute({i})" in body


async def test_rate_limit_on_an_edit_is_waited_out_and_the_final_text_delivered() -> None:
    connector = roomy()
    connector.rate_limits = [0.3, 0.3]
    tokens = words(40)
    await ReplyStreamer(connector, DEST).run(scripted(tokens, delay=0.01))

    assert len(connector.rejected) == 2
    first_rejection = connector.rejected[0].at
    later = [c for c in connector.calls if c.at > first_rejection]
    assert later, "calls resumed after the wait"
    assert later[0].at - first_rejection >= 0.3 - 0.01
    assert connector.messages() == ["".join(tokens).rstrip()]


async def test_rate_limit_on_the_final_edit_still_delivers_it() -> None:
    connector = roomy()
    tokens = words(5)

    async def stream() -> AsyncIterator[str]:
        for token in tokens:
            yield token
        connector.rate_limits.append(0.2)

    await ReplyStreamer(connector, DEST).run(stream())
    assert connector.rejected
    assert connector.messages() == ["".join(tokens).rstrip()]


async def test_transient_failure_of_the_final_edit_is_retried() -> None:
    connector = roomy()
    tokens = words(3)

    async def stream() -> AsyncIterator[str]:
        for token in tokens:
            yield token
        connector.failures = 1

    await ReplyStreamer(connector, DEST).run(stream())
    assert len(connector.rejected) == 1
    assert connector.messages() == ["".join(tokens).rstrip()]


class RefusesLongEdits(RecordingConnector):
    """A platform whose own length rule is stricter than the limit it advertised."""

    async def edit(self, message: SentMessage, text: str) -> None:
        if len(text) > 20:
            self.rejected.append(Call(self._now(), "edit", message.id, text))
            raise MessageTooLong(f"{len(text)} characters is too long")
        await super().edit(message, text)


async def test_a_final_edit_refused_for_its_length_is_not_retried() -> None:
    connector = RefusesLongEdits(limits=ConnectorLimits(max_message_length=4000, pacing=Pacing(min_interval=0.01)))
    tokens = words(10)
    with pytest.raises(MessageTooLong):
        await ReplyStreamer(connector, DEST).run(scripted(tokens))
    # The final text was tried once, not once per retry with back-off sleeps in between.
    final = "".join(tokens).rstrip()
    assert [call.text for call in connector.rejected].count(final) == 1


async def test_engine_error_delivers_partial_text_and_note_then_raises() -> None:
    connector = RecordingConnector()

    async def failing() -> AsyncIterator[str]:
        yield "partial answer"
        raise EngineError("boom", user_message="the model broke")

    with pytest.raises(EngineError):
        await ReplyStreamer(connector, DEST).run(failing(), error_note=lambda exc: f"!! {exc}")
    assert connector.messages() == ["partial answer\n\n!! boom"]


async def test_empty_stream_gets_a_visible_final_text() -> None:
    connector = RecordingConnector()
    await ReplyStreamer(connector, DEST).run(scripted([]))
    assert connector.messages() == [EMPTY_REPLY]


async def test_abort_replaces_the_placeholder_with_a_note() -> None:
    connector = RecordingConnector()
    streamer = ReplyStreamer(connector, DEST)
    await streamer.start()
    await streamer.abort("could not answer")
    assert connector.messages() == ["could not answer"]


# Native streams: a connector that offers one per message, recorded like its sends and edits


class Stream(NativeStream):
    """A native stream that records its calls on its connector; ``refuse_after`` updates, it refuses."""

    def __init__(self, connector: Streams, *, appends: bool = False) -> None:
        self.connector = connector
        self.pacing = Pacing(min_interval=0.01)
        self.refresh = connector.refresh
        self.appends = appends
        self.shown = ""

    def _record(self, kind: str, text: str) -> None:
        self.connector.native_calls.append((kind, text))

    async def start(self) -> None:
        if self.connector.refuse_start:
            raise NativeRefused("no streams here")
        self._record("start", "")

    async def update(self, text: str) -> None:
        if self.connector.refuse_after is not None and self.connector.updates >= self.connector.refuse_after:
            raise NativeRefused("streams stopped")
        self.connector.updates += 1
        self._record("update", text)
        self.shown = text

    async def finish(self, text: str) -> SentMessage:
        self._record("finish", text)
        if self.appends and not text.startswith(self.shown):
            self.settled = False  # like Slack: what was appended stays, the core edits it
        return await self.connector.send(DEST, self.shown if not self.settled else text)


class Streams(RecordingConnector):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.native_calls: list[tuple[str, str]] = []
        self.refuse_start = False
        self.refuse_after: int | None = None
        self.updates = 0
        self.refresh: float | None = None
        self.appends = False

    def native_stream(self, destination: Destination) -> NativeStream | None:
        return Stream(self, appends=self.appends)


def kinds(connector: Streams) -> list[str]:
    return [kind for kind, _ in connector.native_calls]


async def test_a_native_stream_starts_updates_and_finishes_with_the_exact_text() -> None:
    connector = Streams(limits=ConnectorLimits(max_message_length=4000, pacing=Pacing(min_interval=0.05)))
    tokens = words(60)
    streamer = ReplyStreamer(connector, DEST)
    await streamer.run(scripted(tokens, delay=0.002))
    assert kinds(connector)[0] == "start"
    assert kinds(connector)[-1] == "finish"
    updates = [text for kind, text in connector.native_calls if kind == "update"]
    assert 1 <= len(updates) < len(tokens) / 3  # coalesced
    assert all(a != b for a, b in itertools.pairwise(updates))
    assert connector.native_calls[-1][1] == "".join(tokens).rstrip()
    assert [c.kind for c in connector.calls] == ["send"]  # the final message only: no placeholder, no edits
    assert streamer.edits == 0
    assert streamer.stream_updates == len(updates)


async def test_a_refused_start_streams_by_editing() -> None:
    connector = Streams(limits=ConnectorLimits(max_message_length=4000, pacing=Pacing(min_interval=0.01)))
    connector.refuse_start = True
    await ReplyStreamer(connector, DEST).run(scripted(words(20), delay=0.002))
    assert connector.native_calls == []
    assert connector.calls[0].text == PLACEHOLDER
    assert connector.messages() == ["".join(words(20)).rstrip()]


async def test_a_stream_refused_mid_reply_goes_on_by_editing_from_its_text() -> None:
    connector = Streams(limits=ConnectorLimits(max_message_length=4000, pacing=Pacing(min_interval=0.01)))
    connector.refuse_after = 2
    streamer = ReplyStreamer(connector, DEST)
    await streamer.run(scripted(words(60), delay=0.003))
    shown = [text for kind, text in connector.native_calls if kind == "update"][-1]
    first = connector.calls[0]
    assert first.kind == "send"
    assert first.text.startswith(shown)  # the new message starts from what the stream showed
    assert "finish" not in kinds(connector)
    assert connector.messages() == ["".join(words(60)).rstrip()]
    assert streamer.edits >= 1
    assert not streamer.native


async def test_a_native_reply_rolls_over_into_new_streams() -> None:
    connector = Streams()  # 200 characters a message
    tokens = words(150)
    streamer = ReplyStreamer(connector, DEST)
    await streamer.run(scripted(tokens))
    finished = [text for kind, text in connector.native_calls if kind == "finish"]
    assert kinds(connector).count("start") == len(finished) >= 5
    assert all(len(text) <= 200 for text in finished)
    assert squash(" ".join(finished)) == squash("".join(tokens))
    assert len(streamer.message_ids) == len(finished)


async def test_an_unsettled_finish_is_edited_to_the_final_text() -> None:
    connector = Streams(limits=ConnectorLimits(max_message_length=60, pacing=Pacing(min_interval=0.005)))
    connector.appends = True  # text streamed past the cut stays until the core edits it
    tokens = words(40)
    await ReplyStreamer(connector, DEST).run(scripted(tokens, delay=0.01))
    messages = connector.messages()
    assert all(len(m) <= 60 for m in messages)
    assert squash(" ".join(messages)) == squash("".join(tokens))
    assert any(c.kind == "edit" for c in connector.calls)


async def test_an_idle_stream_is_refreshed() -> None:
    connector = Streams(limits=ConnectorLimits(max_message_length=4000, pacing=Pacing(min_interval=0.01)))
    connector.refresh = 0.05
    await ReplyStreamer(connector, DEST).run(scripted(["slow ", "words"], delay=0.3))
    updates = [text for kind, text in connector.native_calls if kind == "update"]
    assert updates.count("") >= 3  # the empty stream was kept up before the first word
    assert connector.messages() == ["slow words"]
