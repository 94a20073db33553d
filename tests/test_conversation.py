"""The conversation model: the scope policy, and clean text at the boundary."""

import pytest

from bot.conversation import CommandRequest, ConversationKey, IncomingMessage, Scope, clean_text, conversation_key


def message(**fields: object) -> IncomingMessage:
    base: dict[str, object] = {"platform": "p", "channel": "c", "user": "u", "message_id": "m", "text": "hi"}
    return IncomingMessage(**(base | fields))  # type: ignore[arg-type]


def test_direct_message_is_per_user_whatever_the_channel_scope() -> None:
    for scope in Scope:
        assert conversation_key(message(is_direct=True), scope) == ConversationKey("p", "c", None, "u")


def test_group_channel_is_per_user_by_default() -> None:
    alice = conversation_key(message(user="alice"))
    bob = conversation_key(message(user="bob"))
    assert alice != bob
    assert alice == ConversationKey("p", "c", None, "alice")


def test_shared_channel_is_one_conversation() -> None:
    alice = conversation_key(message(user="alice"), Scope.SHARED)
    bob = conversation_key(message(user="bob"), Scope.SHARED)
    assert alice == bob == ConversationKey("p", "c", None, None)


@pytest.mark.parametrize("scope", list(Scope))
def test_thread_is_shared_by_its_members(scope: Scope) -> None:
    alice = conversation_key(message(user="alice", thread="t"), scope)
    bob = conversation_key(message(user="bob", thread="t"), scope)
    assert alice == bob == ConversationKey("p", "c", "t", None)
    assert alice != conversation_key(message(user="alice", thread="t2"), scope)


def test_keys_are_frozen_and_hashable() -> None:
    key = ConversationKey("p", "c")
    with pytest.raises(AttributeError):
        key.channel = "other"  # type: ignore[misc]
    assert {key: 1}[ConversationKey("p", "c")] == 1


def test_text_entering_the_core_is_valid_unicode_without_nul() -> None:
    message = IncomingMessage("p", "c", "u", "m", "a\ud800b\x00c 😀", user_name="x\udfffy")
    assert message.text == "a\ufffdbc 😀"
    assert message.user_name == "x\ufffdy"
    message.text.encode("utf-8")  # storable
    request = CommandRequest("p", "c", "u", "ask", {"prompt": "q\ud83d", "n": 3})
    assert request.args == {"prompt": "q\ufffd", "n": 3}
    assert CommandRequest("p", "c", "u", "ask", "x\x00y").args == "xy"
    assert clean_text("plain") == "plain"


def test_names_and_ids_entering_the_core_are_clean_too() -> None:
    request = CommandRequest("p\x00", "c\ud800", "u", "\ud800ask\x00", {"k\x00": "v"}, thread="t\x00")
    assert (request.platform, request.channel, request.name, request.thread) == ("p", "c\ufffd", "\ufffdask", "t")
    assert request.args == {"k": "v"}
    message = IncomingMessage("p", "c\x00", "u\udc00", "m\x00", "x", thread="\ud800")
    assert (message.channel, message.user, message.message_id, message.thread) == ("c", "u\ufffd", "m", "\ufffd")
