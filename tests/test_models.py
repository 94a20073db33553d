"""Several models: named in settings, loaded when first used, chosen per conversation with /model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.app import Parley
from bot.conversation import IncomingMessage
from bot.engine import Engine
from bot.errors import ConfigError, EngineError
from bot.logs import secrets_of
from bot.settings import EngineSettings, load_settings
from tests.conftest import MakeSettings
from tests.support import ScriptedModels, long_story, make_app, scripted_engine, wait_idle, wait_until
from tests.test_check import fix_after, lines, parley_check
from tests.test_engine_openai import FakeServer, free_port
from tests.test_personas import dm, in_channel, run
from tests.test_streamer import roomy

UNLIMITED = {"messages_per_minute": 0}
OFFLINE = "http://127.0.0.1:9/v1"
"""A model server nobody reaches: the scripted factory never calls it."""
MODELS: dict[str, Any] = {
    "fast": {"backend": "openai", "base_url": OFFLINE, "model": "fast-1"},
    "big": {"backend": "local", "model": "big-1"},
}


async def answer(app: Parley, message: IncomingMessage) -> str:
    """The reply to ``message`` as stored."""
    app.chat.submit(message, roomy())
    await wait_idle(app)
    conversation = await app.store.find_conversation(app.chat.key_for(message))
    assert conversation is not None
    return [turn.text for turn in await app.store.turns(conversation) if turn.role == "assistant"][-1]


async def test_a_model_switch_applies_to_its_conversation_only_and_survives_a_restart(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(web={"enabled": False}, models=MODELS, limits=UNLIMITED)
    models = ScriptedModels()
    async with make_app(settings, factory=models) as app:
        listing = await run(app, dm("U1"), "model")
        assert "Model: default (this channel's default)." in listing
        assert "- fast: fast-1 at http://127.0.0.1:9/v1 (not loaded)" in listing
        assert "- big: local, " in listing
        assert models.built == [], "no named model is built before a reply needs it"
        assert await run(app, dm("U1"), "model", "Fast") == (
            "Model set to fast for this conversation; it applies from the next reply."
        )
        assert await answer(app, dm("U1", "one")) == "[fast-1] You said: one"
        # The AstrBot trap: every other conversation keeps its model.
        assert await answer(app, dm("U2", "two")) == "You said: two"
        assert await answer(app, in_channel("U1", "three")) == "You said: three"
        assert await answer(app, IncomingMessage("other", "D-U1", "U1", "", "four", is_direct=True)) == (
            "You said: four"
        )
        assert [m.content for m in models.prompts("fast-1")[-1] if m.role == "user"] == ["one"]
        assert "Model: fast (chosen in this conversation)." in await run(app, dm("U1"), "model")
        assert "Model: default" in await run(app, dm("U2"), "model")
    restarted = ScriptedModels()
    async with make_app(settings, factory=restarted) as app:
        assert "Model: fast (chosen in this conversation)." in await run(app, dm("U1"), "model")
        assert await answer(app, dm("U1", "five")) == "[fast-1] You said: five"
        history = [m.content for m in restarted.prompts("fast-1")[-1] if m.role == "user"]
        assert history == ["one", "five"], "the history goes with the conversation to its model"
        assert await answer(app, dm("U2", "six")) == "You said: six"
        assert await run(app, dm("U1"), "model", "off") == (
            "This conversation uses the channel's default model again (default)."
        )
        assert await answer(app, dm("U1", "seven")) == "You said: seven"


async def test_admins_set_the_channel_default_and_the_models_allowed(make_settings: MakeSettings) -> None:
    settings = make_settings(web={"enabled": False}, models=MODELS, limits=UNLIMITED)
    async with make_app(settings, factory=ScriptedModels()) as app:
        assert await run(app, in_channel("U1"), "model", "default fast") == "Only admins can use /model default."
        assert await run(app, in_channel("U1"), "model", "allow big") == "Only admins can use /model allow."
        assert await run(app, in_channel("A1"), "model", "default fast", admin=True) == (
            "This channel's default model is now fast; it applies from the next reply."
        )
        assert await answer(app, in_channel("U1", "a")) == "[fast-1] You said: a"
        assert await answer(app, in_channel("U2", "b")) == "[fast-1] You said: b"
        assert await answer(app, dm("U1", "c")) == "You said: c", "another channel keeps its default"

        assert await run(app, in_channel("A1"), "model", "allow big", admin=True) == (
            "Users here may now choose from: big, fast (the channel's default is always allowed)."
        )
        refused = await run(app, in_channel("U1"), "model", "default")
        assert refused == "The model 'default' is not allowed here (you can choose: big, fast)."
        assert await run(app, in_channel("U1"), "model", "wizard") == (
            "The model 'wizard' is not configured (you can choose: big, fast)."
        )
        await run(app, in_channel("U1"), "model", "big")
        assert await answer(app, in_channel("U1", "d")) == "[big-1] You said: d"
        assert await answer(app, in_channel("U2", "e")) == "[fast-1] You said: e"
        admin_view = await run(app, in_channel("A1"), "model", admin=True)
        assert "Not allowed here (admins: /model allow):\n- default: local, " in admin_view

        # A choice the channel stops allowing waits, unused; the channel's default answers.
        await run(app, in_channel("A1"), "model", "allow fast", admin=True)
        assert await answer(app, in_channel("U1", "f")) == "[fast-1] You said: f"
        await run(app, in_channel("A1"), "model", "allow all", admin=True)
        assert await answer(app, in_channel("U1", "g")) == "[big-1] You said: g"

        assert "There is no model 'nope'" in await run(app, in_channel("A1"), "model", "allow nope", admin=True)
        assert "There is no model 'nope'" in await run(app, in_channel("A1"), "model", "default nope", admin=True)
        assert await run(app, in_channel("U1"), "model", "big extra") == "Usage: /model [name|off]"
        await run(app, in_channel("A1"), "model", "default default", admin=True)
        assert await answer(app, in_channel("U2", "h")) == "You said: h"
        assert "/model [name] [value] — Show or choose the model" in await run(app, dm("U1"), "help")


async def test_local_models_load_when_used_one_at_a_time_and_unload_when_idle(make_settings: MakeSettings) -> None:
    models = {**MODELS, "tiny": {"backend": "local", "model": "tiny-1"}}
    settings = make_settings(web={"enabled": False}, models=models, limits=UNLIMITED, model_idle_unload=0.3)
    factory = ScriptedModels()
    async with make_app(settings, factory=factory) as app:
        default = scripted_engine(app)
        idle = "not loaded"
        assert app.engines.statuses() == {"default": "ready", "big": idle, "fast": idle, "tiny": idle}
        assert factory.built == []
        await run(app, dm("U1"), "model", "big")
        assert await answer(app, dm("U1", "x")) == "[big-1] You said: x"
        assert [label for label, _ in factory.built] == ["big-1"]
        assert default.status() == "stopped", "one local model at a time: the default made room"
        assert await answer(app, dm("U2", "y")) == "You said: y"
        assert default.status() == "ready"
        assert app.engines.status("big") == "not loaded"
        await answer(app, dm("U1", "z"))
        assert app.engines.loads == ["default", "big", "default", "big"]
        await wait_until(lambda: app.engines.status("big") == "not loaded", 10, what="the idle unload")
        assert factory.engines("big-1")[-1].status() == "stopped"
        assert app.engines.status("default") == "not loaded", "the default loads again when a reply needs it"
        assert await answer(app, dm("U2", "w")) == "You said: w"


async def test_a_model_is_never_unloaded_under_a_running_reply(make_settings: MakeSettings) -> None:
    settings = make_settings(web={"enabled": False}, models=MODELS, limits=UNLIMITED, model_idle_unload=0.05)
    factory = ScriptedModels(long_story, delay=0.02)  # 48 words: a second, far past the idle timeout
    async with make_app(settings, factory=factory) as app:
        await run(app, dm("U1"), "model", "big")
        app.chat.submit(dm("U1", "long one"), roomy())
        await wait_until(lambda: bool(factory.built), what="big to load")
        big = factory.engines("big-1")[0]
        app.chat.submit(dm("U2", "short"), roomy())  # the default must wait for big's reply to end
        await wait_until(lambda: bool(big.prompts), what="big's reply")
        await asyncio.sleep(0.3)
        assert big.status() == "ready", "neither the idle unload nor the default's turn stopped it"
        assert not scripted_engine(app).prompts
        await wait_idle(app)
        assert big.status() == "stopped"
        assert [m.content for m in scripted_engine(app).prompts[-1] if m.role == "user"] == ["short"]


@pytest.fixture
async def model_server() -> AsyncIterator[FakeServer]:
    from aiohttp import web

    server = FakeServer("none")
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/v1"
    yield server
    await runner.cleanup()


async def test_each_conversation_requests_its_own_model_name(
    make_settings: MakeSettings, model_server: FakeServer
) -> None:
    url = model_server.url
    models = {
        "fast": {"backend": "openai", "base_url": url, "model": "fast-model", "api_key": "sk-fast-secret-1"},
        "smart": {"backend": "openai", "base_url": url, "model": "smart-model"},
    }
    settings = make_settings(web={"enabled": False}, models=models, limits=UNLIMITED)
    async with make_app(settings) as app:  # the real factory: engine.openai against the fake server
        await run(app, dm("U1"), "model", "fast")
        await run(app, dm("U2"), "model", "smart")
        assert await answer(app, dm("U1", "first")) == "Hi there"
        assert await answer(app, dm("U2", "second")) == "Hi there"
        assert await answer(app, dm("U3", "third")) == "You said: third"
        assert await answer(app, dm("U1", "fourth")) == "Hi there"
    chats = [body for path, body in model_server.requests if path == "/v1/chat/completions"]
    sent = [(body["model"], body["messages"][-1]["content"]) for body in chats]
    assert sent == [("fast-model", "first"), ("smart-model", "second"), ("fast-model", "fourth")]
    assert "sk-fast-secret-1" in secrets_of(settings), "a named model's key is masked in logs"


async def test_health_lists_each_model(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(models=MODELS, limits=UNLIMITED), factory=ScriptedModels()) as app:
        assert app.web is not None
        async with aiohttp.ClientSession() as http, http.get(f"{app.web.url}/healthz") as response:
            assert response.status == 200
            body = await response.json()
    assert body["components"]["engine"] == "ready"
    assert body["components"]["model fast"] == body["components"]["model big"] == "not loaded"


def test_models_come_from_the_environment_and_inherit_the_engines_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_ENGINE__BACKEND", "openai")
    monkeypatch.setenv("PARLEY_ENGINE__MODEL", "main-model")
    monkeypatch.setenv("PARLEY_ENGINE__N_CTX", "1024")
    monkeypatch.setenv("PARLEY_MODELS__Fast__BACKEND", "openai")
    monkeypatch.setenv("PARLEY_MODELS__FAST__BASE_URL", "http://127.0.0.1:8001/v1")
    monkeypatch.setenv("PARLEY_MODELS__FAST__MODEL", "fast-model")
    monkeypatch.setenv("PARLEY_MODELS__FAST__MAX_TOKENS", "64")
    settings = load_settings()
    assert settings.model_names == ["default", "fast"]
    fast = settings.model_settings("fast")
    assert (fast.model, fast.base_url, fast.n_ctx, fast.max_tokens) == (
        "fast-model",
        "http://127.0.0.1:8001/v1",
        1024,
        64,
    )
    assert settings.model_settings("default").model == "main-model"

    monkeypatch.setenv("PARLEY_MODELS__ALLOW__BACKEND", "openai")
    with pytest.raises(ConfigError, match="'allow' cannot name a model"):
        load_settings()
    monkeypatch.delenv("PARLEY_MODELS__ALLOW__BACKEND")
    monkeypatch.setenv("PARLEY_MODELS__FAST__N_CTX", "32")
    with pytest.raises(ConfigError, match="PARLEY_MODELS__FAST__N_CTX"):
        load_settings()


async def test_parley_check_checks_each_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model_server: FakeServer
) -> None:
    dead = "http://127.0.0.1:9/v1"
    env = {
        "PARLEY_ENGINE__BACKEND": "openai",
        "PARLEY_ENGINE__BASE_URL": model_server.url,
        "PARLEY_MODELS__FAST__BACKEND": "openai",
        "PARLEY_MODELS__FAST__BASE_URL": model_server.url,
        "PARLEY_MODELS__FAST__MODEL": "fast-model",
        "PARLEY_MODELS__GONE__BACKEND": "openai",
        "PARLEY_MODELS__GONE__BASE_URL": dead,
        "PARLEY_WEB__PORT": str(free_port()),
    }
    code, out = await parley_check(monkeypatch, capsys, env)
    assert code == 1
    assert lines(out, "✓", "engine")
    [fast] = lines(out, "✓", "model fast")
    assert f"openai at {model_server.url}, model fast-model: reached in" in fast
    [gone] = lines(out, "✗", "model gone")
    assert f"openai at {dead}, model default: cannot start" in gone
    assert "PARLEY_MODELS__GONE__BASE_URL" in fix_after(out, "model gone")


class Unloadable(ScriptedModels):
    """A factory whose engines cannot start until ``fixed``."""

    fixed = False

    def __call__(self, settings: EngineSettings) -> Engine:
        engine = super().__call__(settings)
        if not self.fixed:

            async def broken() -> None:
                raise EngineError("cannot load model '/models/big.gguf': out of memory")

            engine.start = broken  # type: ignore[method-assign]
        return engine


async def test_a_model_that_cannot_load_fails_that_reply_only(make_settings: MakeSettings) -> None:
    settings = make_settings(web={"enabled": False}, models=MODELS, limits=UNLIMITED)
    factory = Unloadable()
    async with make_app(settings, factory=factory) as app:
        await run(app, dm("U1"), "model", "big")
        connector = roomy()
        app.chat.submit(dm("U1", "hello"), connector)
        await wait_idle(app)
        assert connector.messages()[-1].startswith("⚠️ "), "the user learns that the reply failed"
        assert app.engines.status("big") == "not loaded"
        assert await answer(app, dm("U2", "still here")) == "You said: still here"
        factory.fixed = True
        assert await answer(app, dm("U1", "again")) == "[big-1] You said: again", "the next reply tries again"


async def test_a_choice_of_a_model_no_longer_configured_is_skipped(make_settings: MakeSettings) -> None:
    async with make_app(make_settings(web={"enabled": False}, models=MODELS), factory=ScriptedModels()) as app:
        await run(app, dm("U1"), "model", "fast")
        await run(app, in_channel("A1"), "model", "default fast", admin=True)
    async with make_app(make_settings(web={"enabled": False}), factory=ScriptedModels()) as app:
        assert "Model: default (this channel's default)." in await run(app, dm("U1"), "model")
        assert await answer(app, dm("U1", "one")) == "You said: one"
        assert await answer(app, in_channel("U2", "two")) == "You said: two"


async def test_two_local_models_take_turns_on_the_real_model(make_settings: MakeSettings) -> None:
    """The real local engine unloads and loads again (the bundled file under two names)."""
    small = {"n_ctx": 512, "parallel": 1, "max_tokens": 8}
    settings = make_settings(
        web={"enabled": False}, engine=small, models={"other": {"backend": "local"}}, limits=UNLIMITED
    )
    async with make_app(settings, real_engine=True) as app:
        assert app.engines.statuses() == {"default": "ready", "other": "not loaded"}
        await run(app, dm("U1"), "model", "other")
        assert (await answer(app, dm("U1", "Say hi."))).strip()
        assert app.engines.statuses() == {"default": "not loaded", "other": "ready"}
        assert (await answer(app, dm("U2", "Say hi."))).strip()
        assert app.engines.statuses() == {"default": "ready", "other": "not loaded"}
        assert app.engines.loads == ["default", "other", "default"]
