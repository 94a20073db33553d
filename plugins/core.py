"""Built-in commands: help, ask, reset, stop, system, persona, scope, stats, ping."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from bot.plugin import Arg, CommandError, Invocation, Plugin, Router, Scope

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


@router.command(description="Share one conversation in this channel, or one per user (admins)", admin=True)
async def scope(inv: Invocation, mode: Annotated[Literal["shared", "per-user"], Arg("the channel's scope")]) -> str:
    current = inv.channel_settings()
    await inv.set_channel_settings(dataclasses.replace(current, scope=Scope(mode)))
    if mode == "shared":
        return "This channel now shares one conversation (threads and direct messages are unchanged)."
    return "Each user now has their own conversation in this channel."


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


plugin = Plugin(name="core", description="Parley's built-in commands", version="1.0", router=router)
