"""Memory: /remember, /memory, /forget; notes found with FTS5 and put in the prompt, per user."""

from __future__ import annotations

from typing import Annotated

from bot.app import Parley
from bot.conversation import CommandRequest, IncomingMessage
from bot.memory import RECALL_HEADER, Notes, Owner, search_query
from bot.plugin import Arg, Invocation, MessageContext, Next, Plugin, Router
from tests.conftest import MakeSettings
from tests.support import make_app, scripted_engine, wait_idle
from tests.test_plugins import Collecting
from tests.test_streamer import roomy

UNLIMITED = {"messages_per_minute": 0}


def dm(user: str, text: str = "Hello") -> IncomingMessage:
    return IncomingMessage("recording", f"D-{user}", user, "", text, is_direct=True, user_name=user)


def in_channel(user: str, text: str = "Hello", thread: str | None = None) -> IncomingMessage:
    return IncomingMessage("recording", "C1", user, "", text, thread=thread, user_name=user)


async def run(app: Parley, where: IncomingMessage, command: str, args: str = "", *, admin: bool = False) -> str:
    replies = Collecting()
    request = CommandRequest(
        where.platform,
        where.channel,
        where.user,
        command,
        args,
        thread=where.thread,
        is_direct=where.is_direct,
        is_admin=admin,
    )
    await app.chat.commands.run(request, replies)
    return "\n".join(text for text, _ in replies.texts)


async def asked(app: Parley, message: IncomingMessage) -> str:
    """The last user message of the prompt ``message`` produced."""
    app.chat.submit(message, roomy())
    await wait_idle(app)
    return [m.content for m in scripted_engine(app).prompts[-1] if m.role == "user"][-1]


async def test_a_note_reaches_a_related_question_and_only_its_owners_conversations(
    make_settings: MakeSettings,
) -> None:
    async with make_app(make_settings(web={"enabled": False}, limits=UNLIMITED)) as app:
        answer = await run(app, dm("U1"), "remember", "My cat is called Tom and she likes tuna.")
        assert answer.startswith("Kept as your note 1.")
        prompt = await asked(app, dm("U1", "What should I feed my cats?"))
        assert prompt == f"{RECALL_HEADER}\n- My cat is called Tom and she likes tuna.\n\nWhat should I feed my cats?"
        # Unrelated: no notes. The stored turn is the text as written.
        assert await asked(app, dm("U1", "Explain photosynthesis.")) == "Explain photosynthesis."
        # The owner's own conversation in a channel has it too.
        assert "Tom" in await asked(app, in_channel("U1", "Is my cat hungry?"))
        # Another user's conversations never do, nor a shared thread the owner writes in.
        assert "Tom" not in await asked(app, dm("U2", "Is my cat hungry?"))
        assert "Tom" not in await asked(app, in_channel("U2", "Is my cat hungry?"))
        assert "Tom" not in await asked(app, in_channel("U1", "Is my cat hungry?", thread="t1"))
        assert "Tom" not in await run(app, dm("U2"), "memory")
        key = app.chat.key_for(dm("U1"))
        turns = await app.store.turns(await app.store.conversation(key))
        assert turns[0].text == "What should I feed my cats?"


async def test_memory_lists_forget_deletes_one_and_all(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"enabled": False}, limits=UNLIMITED)) as app:
        for fact in ("I live in Lisbon.", "I am vegetarian.", "My sister is Ana."):
            await run(app, dm("U1"), "remember", fact)
        await run(app, dm("U2"), "remember", "I live in Oslo.")
        assert await run(app, dm("U1"), "memory") == (
            "Your notes:\n1. I live in Lisbon.\n2. I am vegetarian.\n3. My sister is Ana."
        )
        assert await run(app, dm("U1"), "forget", "2") == "Forgot note 2: I am vegetarian."
        assert await run(app, dm("U1"), "memory") == "Your notes:\n1. I live in Lisbon.\n2. My sister is Ana."
        assert "There is no note '7'" in await run(app, dm("U1"), "forget", "7")
        assert await run(app, dm("U1"), "forget", "all") == "Deleted all your notes (2): nothing of them is kept."
        assert "You have no notes" in await run(app, dm("U1"), "memory")
        assert "Lisbon" not in await asked(app, dm("U1", "Where do I live?"))
        # Gone from the database and its index, and U2's note is untouched.
        async with app.store.db.execute("SELECT text FROM notes") as cursor:
            assert [row[0] for row in await cursor.fetchall()] == ["I live in Oslo."]
        async with app.store.db.execute("SELECT rowid FROM notes_index WHERE notes_index MATCH 'lisbon'") as cursor:
            assert await cursor.fetchall() == []
        assert "Oslo" in await asked(app, dm("U2", "Where do I live?"))


async def test_admins_keep_channel_notes_for_every_conversation_there(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"enabled": False}, limits=UNLIMITED)) as app:
        answer = await run(app, in_channel("A1"), "remember", "channel Standup is at 9:30 on Mondays.", admin=True)
        assert answer == "Kept as channel note c1: every conversation here can use it."
        for message in (in_channel("U1", "When is standup?"), in_channel("U2", "When is standup?", thread="t9")):
            assert "Standup is at 9:30 on Mondays." in await asked(app, message)
        assert "9:30" not in await asked(app, dm("U1", "When is standup?"))  # another channel
        # A user's "channel …" is their own note; only admins change channel notes.
        await run(app, in_channel("U1"), "remember", "channel names confuse me")
        listing = await run(app, in_channel("U1"), "memory")
        assert (
            listing
            == "Your notes:\n1. channel names confuse me\nThis channel's notes:\nc1. Standup is at 9:30 on Mondays."
        )
        assert await run(app, in_channel("U1"), "forget", "c1") == "Only admins can change the channel's notes."
        assert (await run(app, in_channel("A1"), "forget", "c1", admin=True)).startswith("Forgot channel note c1")


async def test_notes_fill_the_token_budget_best_first(make_settings: MakeSettings) -> None:
    settings = make_settings(web={"enabled": False}, limits=UNLIMITED, memory_tokens=30, memory_notes=3)
    async with make_app(settings) as app:
        await run(app, dm("U1"), "remember", "Tea: " + "green " * 40)  # too big for the budget
        await run(app, dm("U1"), "remember", "I drink tea without sugar.")
        await run(app, dm("U1"), "remember", "Coffee makes me jittery.")
        assert "most there may be" in await run(app, dm("U1"), "remember", "one too many")
        prompt = await asked(app, dm("U1", "Brew me some tea"))
        assert prompt == f"{RECALL_HEADER}\n- I drink tea without sugar.\n\nBrew me some tea"
    async with make_app(make_settings(web={"enabled": False}, limits=UNLIMITED, memory_tokens=0)) as app:
        assert await asked(app, dm("U1", "Brew me some tea")) == "Brew me some tea"  # kept, but not used


async def test_plugins_read_and_write_memory(make_settings: MakeSettings) -> None:
    router = Router()

    @router.command(description="Keep a fact, then look it up")
    async def learn(inv: Invocation, fact: Annotated[str, Arg("a fact")]) -> str:
        note = await inv.memory.add(fact)
        found = await inv.memory.search("bicycle", limit=3)
        listed = await inv.memory.list()
        assert await inv.memory.delete(listed[0].id)
        return f"{note.text}|{[n.text for n in found]}|{len(listed)}|{len(await inv.memory.list())}"

    async with make_app(make_settings(web={"enabled": False}, limits=UNLIMITED)) as app:
        app.chat.install([*app.plugins, Plugin("learner", "test", "1", router)])
        await run(app, dm("U1"), "remember", "My bicycle is blue.")
        answer = await run(app, dm("U1"), "learn", "I ride bicycles to work.")
        assert answer == "I ride bicycles to work.|['My bicycle is blue.', 'I ride bicycles to work.']|2|1"
        assert await run(app, dm("U1"), "memory") == "Your notes:\n1. I ride bicycles to work."


async def test_search_is_per_owner_and_ignores_query_syntax(make_settings: MakeSettings) -> None:
    assert search_query('What is "NEAR(a b)" OR the* cat?') == '"near" OR "cat"'
    async with make_app(make_settings(web={"enabled": False})) as app:
        notes = Notes(app.store)
        ada, bob = Owner("p", user="ada"), Owner("p", user="bob")
        await notes.add(ada, "Ada owns a red kayak.")
        await notes.add(bob, "Bob owns a green kayak.")
        assert [n.text for n in await notes.search([ada], 'kayak" OR "*')] == ["Ada owns a red kayak."]
        assert await notes.search([ada], "the and of") == []


async def test_a_middleware_can_keep_notes_automatically(make_settings: MakeSettings) -> None:
    router = Router()

    @router.middleware
    async def auto_memory(handler: Next, message: IncomingMessage, ctx: MessageContext) -> str | None:
        if ctx.memory is not None and message.text.lower().startswith("note that "):
            await ctx.memory.add(message.text[len("note that ") :])
        return await handler(message)

    async with make_app(make_settings(web={"enabled": False}, limits=UNLIMITED)) as app:
        app.chat.install([*app.plugins, Plugin("auto", "test", "1", router)])
        await asked(app, dm("U1", "Note that my train leaves at six."))
        assert "- my train leaves at six." in await asked(app, dm("U1", "When does my train leave?"))
        assert "six" not in await asked(app, dm("U2", "When does my train leave?"))


async def test_a_message_without_a_user_id_is_answered_without_memory(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"enabled": False})) as app:
        message = IncomingMessage("recording", "C1", "", "m1", "Hello from nobody", thread="t1")
        assert await asked(app, message) == "Hello from nobody"
