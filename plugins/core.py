"""Built-in commands: help, ask, reset, stop, system, scope, stats, ping."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from bot.plugin import Arg, Invocation, Plugin, Router, Scope

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
