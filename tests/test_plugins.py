"""The plugin API, discovery, built-in commands and abuse limits (web and a recording connector)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import aiohttp
import pytest

from bot.app import Parley
from bot.commands import parse_args
from bot.conversation import CommandRequest, IncomingMessage
from bot.errors import CommandError
from bot.loader import load_plugins
from bot.plugin import Arg, Invocation, MessageContext, Next, Plugin, Router
from bot.settings import load_settings
from tests.conftest import MakeSettings
from tests.support import ScriptedEngine, long_story, make_app
from tests.test_streamer import roomy

ROOT = Path(__file__).resolve().parents[1]


# Declaring commands


def declare() -> Router:
    router = Router()

    @router.command(description="typed options")
    async def typed(
        inv: Invocation,
        word: str,
        count: Annotated[int, Arg("how many", min=1, max=5)],
        ratio: float | None = None,
        loud: bool = False,
        mode: Literal["a", "b"] = "a",
        rest: Annotated[str, Arg("the rest", max_length=10)] = "",
    ) -> str:
        return f"{word} {count} {ratio} {loud} {mode} {rest}"

    return router


def test_handler_signatures_become_typed_params() -> None:
    (command,) = declare().commands
    kinds = [(p.name, p.kind, p.required) for p in command.params]
    assert kinds == [
        ("word", "text", True),
        ("count", "integer", True),
        ("ratio", "number", False),
        ("loud", "boolean", False),
        ("mode", "choice", False),
        ("rest", "text", False),
    ]
    assert command.params[4].choices == ("a", "b")
    assert command.usage == "/typed <word> <count> [ratio] [loud] [a|b] [rest]"


def test_bad_declarations_are_reported_not_raised() -> None:
    router = Router()

    @router.command(description="")
    async def nodescription(inv: Invocation) -> None: ...

    @router.command(description="untyped")
    async def untyped(inv: Invocation, x) -> None: ...  # type: ignore[no-untyped-def]

    @router.command(description="a list")
    async def listy(inv: Invocation, x: list[str]) -> None: ...

    @router.command(description="sync")
    def sync(inv: Invocation) -> None: ...  # type: ignore[arg-type]

    @router.command(description="order")
    async def order(inv: Invocation, a: int = 1, b: int = 2, c: str | None = None, d: str = "") -> None: ...

    @router.command("Bad Name", description="name")
    async def named(inv: Invocation) -> None: ...

    assert [c.name for c in router.commands] == ["order"]
    assert len(router.errors) == 5
    assert any("needs a type annotation" in e for e in router.errors)
    assert any("must be an async function" in e for e in router.errors)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("hello 3", {"word": "hello", "count": 3, "ratio": None, "loud": False, "mode": "a", "rest": ""}),
        ('"two words" 2 0.5 yes B tail text', {"word": "two words", "ratio": 0.5, "loud": True, "mode": "b"}),
        ({"word": "x", "count": 5, "loud": True}, {"word": "x", "count": 5, "loud": True}),
    ],
)
def test_arguments_parse_into_types(args: Any, expected: dict[str, object]) -> None:
    (command,) = declare().commands
    parsed = parse_args(command, args)
    assert parsed.items() >= expected.items()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ("", "word is missing"),
        ("w", "count is missing"),
        ("w many", "count must be a whole number"),
        ("w 9", "count must be at most 5"),
        ("w 2 nan", "ratio must be a finite number"),
        ("w 2 1 maybe", "loud must be yes or no"),
        ("w 2 1 yes c", "mode must be one of a, b"),
        ("w 2 1 yes a this is too long", "rest is too long"),
        ('"open 2', "quote"),
        ({"bogus": 1}, "unknown option"),
    ],
)
def test_bad_arguments_get_the_usage(args: Any, problem: str) -> None:
    (command,) = declare().commands
    with pytest.raises(CommandError) as caught:
        parse_args(command, args)
    assert problem in caught.value.user_message
    assert "Usage: /typed <word>" in caught.value.user_message


# Discovery


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example plugin package, installed with pip into a directory put on sys.path."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), "examples/parley-dice"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("parley_dice", None)


def fake_distribution(site: Path, name: str, entry: str, module: str, source: str) -> None:
    """A minimal installed distribution: a module and a dist-info naming its entry point."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[parley.plugins]\n{entry} = {module}:plugin\n")


def test_plugins_load_from_builtins_and_entry_points_and_bad_ones_are_skipped(
    example_installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_distribution(tmp_path, "broken-import", "broken", "broken_plugin", "raise RuntimeError('kaput')\n")
    fake_distribution(
        tmp_path,
        "bad-command",
        "badcmd",
        "badcmd_plugin",
        "from bot.plugin import Plugin, Router\nrouter = Router()\n"
        "@router.command(description='x')\nasync def f(inv, n: list) -> None: ...\n"
        "plugin = Plugin(name='badcmd', description='d', version='1', router=router)\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_plugins(load_settings())
    assert [p.name for p in loaded.plugins] == ["core", "limits", "dice"]
    assert len(loaded.problems) == 2
    assert any("'broken'" in p and "kaput" in p for p in loaded.problems)
    assert any(p.startswith("plugin badcmd") and "bad command declaration" in p for p in loaded.problems)

    monkeypatch.setenv("PARLEY_PLUGINS__DISABLED", "dice,limits")
    assert [p.name for p in load_plugins(load_settings()).plugins] == ["core"]

    monkeypatch.setenv("PARLEY_PLUGINS__DISABLED", "")
    monkeypatch.setenv("PARLEY_PLUGINS__DICE__MAX_DICE", "1000")
    problems = load_plugins(load_settings()).problems
    assert any("PARLEY_PLUGINS__DICE__" in p and "max_dice" in p for p in problems)


# Commands through the web API (the real app and model)


def key_user(key: str) -> str:
    return "web:key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class Client:
    def __init__(self, app: Parley, http: aiohttp.ClientSession, key: str | None = None) -> None:
        assert app.web is not None
        self.url = app.web.url + "/api/chat"
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def say(self, message: str, conversation_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"message": message, "stream": False}
        if conversation_id:
            body["conversation_id"] = conversation_id
        async with self.http.post(self.url, json=body, headers=self.headers) as response:
            answer: dict[str, Any] = await response.json()
            answer["status"] = response.status
            return answer


async def test_a_streamed_command_ends_with_its_whole_answer(make_settings: MakeSettings) -> None:
    """Like a chat reply's, a command's last event carries the text, for clients that read only it."""
    async with make_app(make_settings()) as app, aiohttp.ClientSession() as http:
        assert app.web is not None
        async with http.post(app.web.url + "/api/chat", json={"message": "/stop"}) as response:
            events = [
                json.loads(line[6:]) for line in (await response.read()).splitlines() if line.startswith(b"data: ")
            ]
    nothing = "Nothing is being written in this conversation."
    assert [e.get("text") for e in events] == [nothing, nothing]
    assert events[0]["ephemeral"] is True
    assert events[-1]["done"] is True
    assert events[-1]["command"] == "stop"


async def test_example_plugin_shows_in_help_and_runs_with_typed_args(
    example_installed: Path, make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_PLUGINS__DICE__MAX_DICE", "3")
    async with make_app(make_settings()) as app, aiohttp.ClientSession() as http:
        client = Client(app, http)
        help_text = (await client.say("/help"))["text"]
        assert "/roll [count] [sides] — Roll dice" in help_text
        assert "/coin <heads|tails>" in help_text
        assert (await client.say("/roll 5"))["text"] == "At most 3 dice at once."  # the plugin's own setting
        assert (await client.say("/roll 2 6"))["text"] == "You can use /roll again in 2 s."  # its cooldown
        await asyncio.sleep(2.1)
        rolled = (await client.say("/roll 2 6"))["text"]
        assert rolled.startswith("local rolled ")
        assert 2 <= int(rolled.rsplit("= ", 1)[1]) <= 12
        usage = (await client.say("/coin edge"))["text"]
        assert "call must be one of heads, tails" in usage
        assert "Traceback" not in usage


async def test_system_is_admin_only_and_applies_to_the_next_reply(make_settings: MakeSettings) -> None:
    settings = make_settings(web={"api_keys": ["admin-key", "user-key"]}, admins=[key_user("admin-key")])
    async with make_app(settings) as app, aiohttp.ClientSession() as http:
        user, admin = Client(app, http, "user-key"), Client(app, http, "admin-key")
        mine = await user.say("hello")
        refused = await user.say("/system Talk like a pirate.", mine["conversation_id"])
        assert refused["text"] == "Only admins can use /system."
        assert app.store.channel_settings("web", mine["conversation_id"]).system_prompt is None

        first = await admin.say("hello")
        conversation = first["conversation_id"]
        long_prompt = "You are a pirate. " * 40
        assert (await admin.say(f"/system {long_prompt}", conversation))["text"].startswith("System prompt set")
        second = await admin.say("hello again", conversation)
        # The new, longer system prompt is in the next prompt.
        gained = (
            second["usage"]["prompt_tokens"] - first["usage"]["prompt_tokens"] - first["usage"]["completion_tokens"]
        )
        assert gained > 100
        shown = (await admin.say("/system", conversation))["text"]
        assert "You are a pirate." in shown


async def test_reset_makes_the_next_reply_ignore_earlier_turns(make_settings: MakeSettings) -> None:
    async with make_app(make_settings()) as app, aiohttp.ClientSession() as http:
        client = Client(app, http)
        first = await client.say("My name is Ada.")
        conversation = first["conversation_id"]
        second = await client.say("What is my name?", conversation)
        assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]
        assert (await client.say("/reset", conversation))["text"].startswith("Done")
        third = await client.say("My name is Ada.", conversation)
        assert third["usage"]["prompt_tokens"] == first["usage"]["prompt_tokens"]


async def test_stop_ends_a_streaming_reply_and_frees_the_engine(make_settings: MakeSettings) -> None:
    engine = ScriptedEngine(long_story, delay=0.01)
    async with make_app(make_settings(engine={"max_tokens": 400}), engine) as app, aiohttp.ClientSession() as http:
        assert app.web is not None
        client = Client(app, http)
        response = await http.post(client.url, json={"message": "Write a very long story about a dragon."})
        first_line = await response.content.readline()
        conversation = first_line.decode().split('"conversation_id": "')[1].split('"')[0]
        stopped = await client.say("/stop", conversation)
        assert stopped["text"] == "Stopped."
        tail = (await response.read()).decode()
        response.close()
        assert '"done": true' in tail
        turns = await app.store.turns(
            await app.store.conversation(
                app.chat.key_for(IncomingMessage("web", conversation, "local", "", "", is_direct=True))
            )
        )
        assert turns[-1].status == "stopped"
        assert 0 < turns[-1].token_count < 400
        assert (await client.say("/stop", conversation))["text"] == "Nothing is being written in this conversation."
        # The engine's only slot is free for the next user.
        assert (await asyncio.wait_for(client.say("hi"), 60))["status"] == 200


# Abuse controls


async def test_a_limited_user_is_told_once(make_settings: MakeSettings) -> None:
    settings = make_settings(web={"enabled": False}, limits={"messages_per_minute": 1, "burst": 1})
    async with make_app(settings) as app:
        connector = roomy()
        for i in range(4):
            message = IncomingMessage("recording", "dm", "u1", f"m{i}", f"hello {i}", is_direct=True)
            app.chat.submit(message, connector)
        await asyncio.wait_for(app.chat.join(), 240)
        texts = connector.messages()
        notices = [t for t in texts if "too fast" in t]
        assert len(notices) == 1
        assert "You can write again in" in notices[0]
        assert len(texts) == 2  # one reply, one notice; the rest dropped silently


async def test_block_list_and_web_rate_limit(make_settings: MakeSettings) -> None:
    settings = make_settings(
        web={"api_keys": ["k"]},
        limits={"messages_per_minute": 1, "burst": 1, "block_users": [key_user("blocked")]},
    )
    settings.web.api_keys.append("blocked")
    async with make_app(settings) as app, aiohttp.ClientSession() as http:
        blocked = Client(app, http, "blocked")
        assert (await blocked.say("hello"))["status"] == 429
        client = Client(app, http, "k")
        assert (await client.say("hello"))["status"] == 200
        limited = await client.say("hello again")
        assert limited["status"] == 429
        assert "write again in" in limited["error"]["message"]


class Collecting:
    """A replier that keeps what a command answered (the platform side of a command)."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, bool]] = []

    async def text(self, text: str, *, ephemeral: bool = False) -> None:
        self.texts.append((text, ephemeral))

    async def stream(self, exchange: Any) -> str:
        async for _ in exchange:
            pass
        return str(exchange.text)


async def test_texts_show_the_platforms_command_prefix(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"enabled": False})) as app:
        replies = Collecting()
        for name, args in (("ask", ""), ("system", "x"), ("nosuch", ""), ("help", "")):
            request = CommandRequest("slack", "C1", "U1", name, args, prefix="parley-")
            await app.chat.commands.run(request, replies)
        usage, refused, unknown, help_text = (text for text, _ in replies.texts)
        assert "Usage: /parley-ask <prompt>" in usage
        assert refused == "Only admins can use /parley-system."
        assert unknown == "Unknown command /parley-nosuch. Try /parley-help."
        assert "/parley-ask <prompt>" in help_text
        assert [ephemeral for _, ephemeral in replies.texts] == [True, True, True, False]


async def test_stop_finds_the_callers_reply_in_a_thread_of_the_channel(make_settings: MakeSettings) -> None:
    engine = ScriptedEngine(long_story, delay=0.01)
    async with make_app(make_settings(web={"enabled": False}, engine={"max_tokens": 400}), engine) as app:
        connector = roomy()
        mention = IncomingMessage("recording", "C1", "U1", "m1", "Write a long story.", thread="t1")
        app.chat.submit(mention, connector)
        while not app.chat.running:
            await asyncio.sleep(0.01)
        replies = Collecting()
        # The slash command arrives without the thread (as Slack sends it).
        await app.chat.commands.run(CommandRequest("recording", "C1", "U2", "stop"), replies)
        assert replies.texts == [("Nothing is being written in this conversation.", True)]
        await app.chat.commands.run(CommandRequest("recording", "C1", "U1", "stop"), replies)
        assert replies.texts[-1] == ("Stopped.", True)
        await asyncio.wait_for(app.chat.join(), 120)
        conversation = await app.store.conversation(app.chat.key_for(mention))
        assert (await app.store.turns(conversation))[-1].status == "stopped"


async def test_message_hooks_can_rewrite_stop_and_observe(make_settings: MakeSettings) -> None:
    router = Router()
    seen: list[tuple[str, str]] = []

    @router.middleware
    async def rewrite(handler: Next, message: IncomingMessage, ctx: MessageContext) -> str | None:
        if "secret" in message.text:
            await ctx.tell("I can't talk about that.")
            return None
        return await handler(dataclasses.replace(message, text=message.text.replace("kitten", "cat")))

    @router.middleware
    async def observe(handler: Next, message: IncomingMessage, ctx: MessageContext) -> str | None:
        text = await handler(message)
        seen.append((message.text, text or ""))
        return text

    async with make_app(make_settings(web={"enabled": False})) as app:
        app.chat.install([*app.plugins, Plugin("hooks", "test hooks", "1", router)])
        connector = roomy()
        app.chat.submit(IncomingMessage("recording", "dm", "u1", "m1", "tell me a secret", is_direct=True), connector)
        app.chat.submit(IncomingMessage("recording", "dm", "u1", "m2", "Name a kitten.", is_direct=True), connector)
        await asyncio.wait_for(app.chat.join(), 120)
        key = app.chat.key_for(IncomingMessage("recording", "dm", "u1", "", "", is_direct=True))
        turns = await app.store.turns(await app.store.conversation(key))
    assert connector.messages()[0] == "I can't talk about that."
    assert [t.text for t in turns if t.role == "user"] == ["Name a cat."]  # the denied one never reached the model
    assert seen == [("Name a cat.", turns[-1].text)]
