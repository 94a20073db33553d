"""Built-in commands: help, ask, reset, stop, system, persona, model, scope, listen, stats, ping; remember,
memory, forget.

``/memory`` numbers a user's notes 1, 2, … and the channel's c1, c2, …; ``/forget`` takes those
numbers. Answers that show a user's notes are ephemeral where the platform can.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from bot.plugin import Arg, CommandError, Invocation, Note, NoteBook, Plugin, Router, Scope

router = Router()

SYSTEM_PROMPT_LIMIT = 4000


@router.command(description="List the commands you can use")
async def help(inv: Invocation) -> str:
    lines = ["Commands:"]
    commands = sorted(inv.available, key=lambda c: c.name)
    lines += [f"{command.usage_for(inv.prefix)} — {command.description}" for command in commands]
    lines.append("Mention me or message me directly to chat.")
    return "\n".join(lines)


@router.command(description="Ask the model something in this conversation")
async def ask(inv: Invocation, prompt: Annotated[str, Arg("what to ask", max_length=4000)]) -> None:
    await inv.stream(prompt)


@router.command(description="Forget this conversation's history")
async def reset(inv: Invocation) -> str:
    await inv.reset()
    return "Done: I have forgotten this conversation. The next message starts afresh."


@router.command(description="Stop the reply being written in this conversation")
async def stop(inv: Invocation) -> None:
    if not inv.stop_reply():
        await inv.reply("Nothing is being written in this conversation.", ephemeral=True)
        return
    await inv.reply("Stopped.", ephemeral=True)


@router.command(description="Show or set this channel's system prompt (admins)", admin=True)
async def system(
    inv: Invocation,
    text: Annotated[str | None, Arg("new prompt, or 'reset' for the default", max_length=SYSTEM_PROMPT_LIMIT)] = None,
) -> str:
    current = inv.channel_settings()
    if text is None:
        prompt = current.system_prompt
        where = "this channel's" if prompt is not None else "the default"
        return f"System prompt ({where}):\n{prompt if prompt is not None else inv.default_system_prompt}"
    new = None if text.strip().lower() == "reset" else text.strip()
    await inv.set_channel_settings(dataclasses.replace(current, system_prompt=new))
    if new is None:
        return "System prompt reset to the default."
    return "System prompt set; it applies from the next reply."


def _personas_line(inv: Invocation) -> str:
    if not inv.personas:
        return "No personas are configured (PARLEY_PERSONAS, PARLEY_PERSONA_DIR)."
    lines = ["Personas:"]
    for name, prompt in inv.personas.items():
        first = " ".join(prompt.split())
        lines.append(f"- {name}: {first[:77] + '…' if len(first) > 80 else first}")
    return "\n".join(lines)


def _persona_status(inv: Invocation) -> str:
    channel = inv.channel_settings()
    current = inv.persona()
    if current is None:
        now = "Persona: none (the default system prompt)."
    elif current == inv.chosen_persona() and not channel.persona_locked:
        now = f"Persona: {current} (chosen in this conversation)."
    else:
        now = f"Persona: {current} (this channel's default)."
    notes = []
    if channel.system_prompt is not None:
        notes.append("This channel's /system prompt overrides every persona.")
    if channel.persona_locked:
        notes.append("The channel's persona is locked: only admins change it.")
    return "\n".join([now, *notes, _personas_line(inv)])


@router.command(description="Show or choose the persona of this conversation")
async def persona(
    inv: Invocation,
    name: Annotated[str | None, Arg("a persona, 'off' for the channel's; admins: 'default' or 'lock'")] = None,
    value: Annotated[str | None, Arg("after default: a persona or 'off'; after lock: on or off")] = None,
) -> str:
    if name is None:
        return _persona_status(inv)
    word = name.strip().lower()
    channel = inv.channel_settings()
    if word in {"default", "lock"}:
        if not inv.is_admin:
            raise CommandError(f"Only admins can use /{inv.prefix}persona {word}.")
        choice = (value or "").strip().lower()
        if word == "lock":
            if choice not in {"on", "off"}:
                raise CommandError(f"Usage: /{inv.prefix}persona lock on|off")
            await inv.set_channel_settings(dataclasses.replace(channel, persona_locked=choice == "on"))
            if choice == "on":
                return "Locked: this channel's conversations use its default persona."
            return "Unlocked: users may choose their own persona here."
        if choice == "off":
            await inv.set_channel_settings(dataclasses.replace(channel, persona=None))
            return "This channel's default persona is cleared: the default system prompt applies."
        _check_persona(inv, choice)
        await inv.set_channel_settings(dataclasses.replace(channel, persona=choice))
        return f"This channel's default persona is now {choice}; it applies from the next reply."
    if value is not None:
        raise CommandError(f"Usage: /{inv.prefix}persona [name|off]")
    if channel.persona_locked:
        raise CommandError("This channel's persona is locked; an admin can change its default.")
    if word == "off":
        await inv.set_persona(None)
        return "This conversation uses the channel's persona again."
    _check_persona(inv, word)
    await inv.set_persona(word)
    note = " (the channel's /system prompt overrides it)" if channel.system_prompt is not None else ""
    return f"Persona set to {word} for this conversation{note}; it applies from the next reply."


def _check_persona(inv: Invocation, name: str) -> None:
    if name not in inv.personas:
        known = ", ".join(inv.personas) or "none are configured"
        raise CommandError(f"There is no persona {name!r} (available: {known}).")


MODEL_NAME_HELP = "a model, 'off' for the channel's; admins: 'default' or 'allow'"
MODEL_VALUE_HELP = "after default: a model; after allow: models (a,b) or all"


def _model_lines(inv: Invocation, names: list[str]) -> list[str]:
    return [f"- {name}: {inv.models[name]} ({inv.model_status(name)})" for name in names]


def _model_status(inv: Invocation) -> str:
    current = inv.model()
    how = "chosen in this conversation" if current == inv.chosen_model() else "this channel's default"
    lines = [f"Model: {current} ({how}).", "Models you can choose here:", *_model_lines(inv, inv.allowed_models())]
    if inv.is_admin:
        others = [name for name in inv.models if name not in inv.allowed_models()]
        if others:
            lines += ["Not allowed here (admins: /model allow):", *_model_lines(inv, others)]
    return "\n".join(lines).replace("/model", f"/{inv.prefix}model")


def _model_names(inv: Invocation, text: str) -> tuple[str, ...] | None:
    words = [word for word in text.replace(",", " ").lower().split() if word]
    if words == ["all"]:
        return None
    unknown = [word for word in words if word not in inv.models]
    if not words or unknown:
        what = f"There is no model {unknown[0]!r}" if unknown else "Name at least one model"
        raise CommandError(f"{what} (configured: {', '.join(inv.models)}); or use all.")
    return tuple(dict.fromkeys(words))


@router.command(description="Show or choose the model of this conversation")
async def model(
    inv: Invocation,
    name: Annotated[str | None, Arg(MODEL_NAME_HELP, max_length=40)] = None,
    value: Annotated[str | None, Arg(MODEL_VALUE_HELP, max_length=400)] = None,
) -> str:
    if name is None:
        return _model_status(inv)
    word = name.strip().lower()
    channel = inv.channel_settings()
    if word in {"default", "allow"} and value is not None:
        if not inv.is_admin:
            raise CommandError(f"Only admins can use /{inv.prefix}model {word}.")
        if word == "allow":
            await inv.set_channel_settings(dataclasses.replace(channel, models=_model_names(inv, value)))
            shown = ", ".join(inv.allowed_models())
            return f"Users here may now choose from: {shown} (the channel's default is always allowed)."
        choice = value.strip().lower()
        if choice not in inv.models:
            raise CommandError(f"There is no model {choice!r} (configured: {', '.join(inv.models)}).")
        await inv.set_channel_settings(dataclasses.replace(channel, model=None if choice == "default" else choice))
        return f"This channel's default model is now {choice}; it applies from the next reply."
    if value is not None:
        raise CommandError(f"Usage: /{inv.prefix}model [name|off]")
    if word == "off":
        await inv.set_model(None)
        return f"This conversation uses the channel's default model again ({inv.model()})."
    allowed = inv.allowed_models()
    if word not in allowed:
        where = "configured" if word not in inv.models else "allowed here"
        raise CommandError(f"The model {word!r} is not {where} (you can choose: {', '.join(allowed)}).")
    await inv.set_model(word)
    return f"Model set to {word} for this conversation; it applies from the next reply."


@router.command(description="Share one conversation in this channel, or one per user (admins)", admin=True)
async def scope(inv: Invocation, mode: Annotated[Literal["shared", "per-user"], Arg("the channel's scope")]) -> str:
    current = inv.channel_settings()
    await inv.set_channel_settings(dataclasses.replace(current, scope=Scope(mode)))
    if mode == "shared":
        return "This channel now shares one conversation (threads and direct messages are unchanged)."
    return "Each user now has their own conversation in this channel."


@router.command(description="Show listen mode here; admins: on keeps recent messages as context, off deletes them")
async def listen(inv: Invocation, mode: Annotated[Literal["on", "off"] | None, Arg("admins: on or off")] = None) -> str:
    current = inv.channel_settings()
    if mode is None:
        if current.listen:
            return (
                "Listen mode is on here: recent messages not addressed to me are kept (a bounded number, for a "
                "limited time) and used as context when I am asked. An admin can turn it off, which deletes them."
            )
        return "Listen mode is off here: only messages addressed to me are kept."
    if not inv.is_admin:
        raise CommandError(f"Only admins can use /{inv.prefix}listen {mode}.")
    await inv.set_channel_settings(dataclasses.replace(current, listen=mode == "on"))
    if mode == "on":
        return (
            "Listen mode on: I keep recent messages here that are not addressed to me and use them as context "
            "when I am asked. /" + inv.prefix + "listen off deletes them."
        )
    return "Listen mode off: the messages kept here are deleted, and no more are kept."


@router.command(description="Turns, tokens and speed in this channel")
async def stats(inv: Invocation) -> str:
    numbers = await inv.channel_stats()
    speed = numbers.completion_tokens / numbers.seconds if numbers.seconds else 0.0
    return (
        f"This channel: {numbers.turns} turns, {numbers.replies} replies, "
        f"{numbers.completion_tokens} tokens generated, {speed:.1f} tokens/s on average."
    )


@router.command(description="Check that the bot is alive")
async def ping(inv: Invocation) -> str:
    return f"pong ({inv.engine_status()}; you are {inv.platform}:{inv.user})"


# memory: notes per user and, for admins, per channel (bot/memory.py)

NOTE_LIMIT = 500


async def _keep(book: NoteBook, text: str) -> int:
    await book.add(text)
    return len(await book.list())


@router.command(description="Keep a note for the bot (admins: 'channel <note>' for the whole channel)")
async def remember(inv: Invocation, note: Annotated[str, Arg("what to remember", max_length=NOTE_LIMIT)]) -> None:
    text = " ".join(note.split())
    first, _, rest = text.partition(" ")
    if inv.is_admin and first.lower() == "channel" and rest:
        number = await _keep(inv.channel_memory, rest)
        await inv.reply(f"Kept as channel note c{number}: every conversation here can use it.")
        return
    number = await _keep(inv.memory, text)
    await inv.reply(
        f"Kept as your note {number}. I use it in your own conversations (not in shared ones); "
        f"/{inv.prefix}memory lists your notes.",
        ephemeral=True,
    )


SHOWN = 120
"""Characters of each note ``/memory`` shows."""
LISTING_LIMIT = 3000
"""Characters of a ``/memory`` answer, within every platform's message length."""


def _lines(notes: list[Note], mark: str) -> list[str]:
    return [
        f"{mark}{number}. {note.text if len(note.text) <= SHOWN else note.text[: SHOWN - 1] + '…'}"
        for number, note in enumerate(notes, 1)
    ]


def _bounded(lines: list[str]) -> str:
    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        if size + len(line) > LISTING_LIMIT:
            kept.append(f"… and {len(lines) - index} more lines")
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)


@router.command(description="List your notes and this channel's")
async def memory(inv: Invocation) -> None:
    mine = await inv.memory.list()
    channel = await inv.channel_memory.list()
    lines = ["Your notes:", *_lines(mine, "")] if mine else ["You have no notes. Add one with /remember <note>."]
    if channel:
        lines += ["This channel's notes:", *_lines(channel, "c")]
    await inv.reply(_bounded(lines).replace("/remember", f"/{inv.prefix}remember"), ephemeral=True)


@router.command(description="Delete a note: its number, 'all' for all yours (admins: c<number>, 'channel all')")
async def forget(inv: Invocation, which: Annotated[str, Arg("a number from /memory, or all", max_length=20)]) -> None:
    word = " ".join(which.lower().split())
    if word in {"all", "channel all"}:
        if word == "channel all":
            _admin(inv)
            count = await inv.channel_memory.clear()
            await inv.reply(f"Deleted this channel's {count} notes.")
            return
        count = await inv.memory.clear()
        await inv.reply(f"Deleted all your notes ({count}): nothing of them is kept.", ephemeral=True)
        return
    channel = word.startswith("c")
    if channel:
        _admin(inv)
    book = inv.channel_memory if channel else inv.memory
    digits = word[1:] if channel else word
    notes = await book.list()
    if not digits.isdigit() or not 1 <= int(digits) <= len(notes):
        raise CommandError(f"There is no note {which!r}; /{inv.prefix}memory shows the numbers.")
    note = notes[int(digits) - 1]
    await book.delete(note.id)
    await inv.reply(f"Forgot {'channel note c' if channel else 'note '}{digits}: {note.text}", ephemeral=True)


def _admin(inv: Invocation) -> None:
    if not inv.is_admin:
        raise CommandError("Only admins can change the channel's notes.")


plugin = Plugin(name="core", description="Parley's built-in commands", version="1.0", router=router)
