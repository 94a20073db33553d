"""The reply streamer against a recording connector and scripted token streams."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator

import pytest

from bot.connector import ConnectorLimits, SentMessage
from bot.conversation import Destination
from bot.errors import EngineError, MessageTooLong
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
