"""``parley check`` through the CLI, with the real SDKs against the wire-level fakes.

The CLI runs in a worker thread (it has its own event loop, ``asyncio.run``) while the fakes serve
on the test's loop. One test loads the bundled model; two run the engine check on a file that is
not a model and against a model server that is not there; the others pass ``--skip-engine``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import cli
from bot.report import Finding, bounded, format_report, masked, redact
from connectors.discord import endpoints
from connectors.discord.check import GATEWAY_MESSAGE_CONTENT, GATEWAY_MESSAGE_CONTENT_LIMITED
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import BOT_ID, BOT_USERNAME, TOKEN, FakeTelegram

Env = dict[str, str]


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    previous = endpoints.current()
    server = FakeDiscord()
    server.app_flags = GATEWAY_MESSAGE_CONTENT
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        endpoints.restore(previous)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
def web_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def telegram_env(fake: FakeTelegram, token: str = TOKEN) -> Env:
    return {"PARLEY_TELEGRAM__TOKEN": token, "PARLEY_TELEGRAM__BASE_URL": fake.url}


def discord_env(fake: FakeDiscord, token: str | None = None) -> Env:
    return {
        "PARLEY_DISCORD__TOKEN": token or fake.token,
        "PARLEY_DISCORD__API_BASE": fake.api_base,
        "PARLEY_DISCORD__GATEWAY_URL": fake.gateway_url,
    }


def slack_env(fake: FakeSlack, **tokens: str) -> Env:
    env = {"PARLEY_SLACK__API_URL": fake.url, "PARLEY_SLACK__BOT_TOKEN": fake.bot_token}
    env["PARLEY_SLACK__APP_TOKEN"] = fake.app_token
    env |= {f"PARLEY_SLACK__{name.upper()}": value for name, value in tokens.items()}
    return {name: value for name, value in env.items() if value}


async def parley_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: Env, *args: str
) -> tuple[int, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = await asyncio.to_thread(cli.main, ["check", *args])
    captured = capsys.readouterr()
    print(captured.out)  # shown with -s, and on failure
    for name, value in env.items():
        if any(word in name for word in ("TOKEN", "SECRET", "API_KEYS")):
            for secret in value.split(","):
                assert secret not in captured.out + captured.err, f"{name} printed"
    return code, captured.out


def lines(out: str, mark: str, subject: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{mark} {subject}")]


def fix_after(out: str, needle: str) -> str:
    """The ``fix:`` line under the first finding containing ``needle``."""
    rows = out.splitlines()
    start = next(i for i, line in enumerate(rows) if needle in line)
    return next(line for line in rows[start + 1 :] if line.strip().startswith("fix:"))


# good settings


async def test_valid_tokens_on_every_platform_and_the_real_model_exit_0(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    telegram: FakeTelegram,
    discord: FakeDiscord,
    slack: FakeSlack,
    web_port: int,
) -> None:
    env = telegram_env(telegram) | discord_env(discord) | slack_env(slack)
    env |= {"PARLEY_WEB__PORT": str(web_port), "PARLEY_ENGINE__THREADS": "2", "PARLEY_ENGINE__PARALLEL": "1"}
    code, out = await parley_check(monkeypatch, capsys, env)
    assert code == 0
    assert lines(out, "✓", "settings")
    assert f"will listen on http://127.0.0.1:{web_port}/ (the port is free)" in out
    [engine] = lines(out, "✓", "engine")
    assert "local, SmolLM2-135M-Instruct" in engine
    assert "loaded in" in engine
    assert "tokens in" in engine
    assert engine.rstrip().endswith('"')
    assert engine.count('"') == 2
    assert any(f"@{BOT_USERNAME} (id {BOT_ID})" in line for line in lines(out, "✓", "telegram"))
    assert lines(out, "!", "telegram")  # the fake's bot has privacy mode on: a warning, not a failure
    assert any(f"parley (id {discord.bot['id']})" in line for line in lines(out, "✓", "discord"))
    assert any(f"client_id={discord.app_id}" in line for line in lines(out, "✓", "discord"))
    slack_ok = "\n".join(lines(out, "✓", "slack"))
    assert "bot @parley (UBOT) in Fake (T1)" in slack_ok
    assert "scopes: all 9 that Parley needs" in slack_ok
    assert "Socket Mode: the app token" in slack_ok
    assert out.rstrip().endswith("all good, 1 warning.")
    for secret in (TOKEN, discord.token, slack.bot_token, slack.app_token):
        assert secret not in out
    assert masked(TOKEN) in out


async def test_privacy_mode_off_and_the_limited_intent_give_no_warning(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    telegram: FakeTelegram,
    discord: FakeDiscord,
    web_port: int,
) -> None:
    telegram.privacy_mode = False
    discord.app_flags = GATEWAY_MESSAGE_CONTENT_LIMITED
    env = telegram_env(telegram) | discord_env(discord) | {"PARLEY_WEB__PORT": str(web_port)}
    code, out = await parley_check(monkeypatch, capsys, env, "--skip-engine")
    assert code == 0
    assert not lines(out, "!", "")
    assert not lines(out, "✓", "engine")
    assert "engine" not in out
    assert out.rstrip().endswith("all good.")


# bad tokens


async def test_a_rejected_telegram_token_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], telegram: FakeTelegram, web_port: int
) -> None:
    wrong = "123456:wrong-token-for-this-bot"
    env = telegram_env(telegram, wrong) | {"PARLEY_WEB__PORT": str(web_port)}
    code, out = await parley_check(monkeypatch, capsys, env, "--skip-engine")
    assert code == 1
    [line] = lines(out, "✗", "telegram")
    assert "rejected the token (…-bot)" in line
    assert "fix: PARLEY_TELEGRAM__TOKEN" in fix_after(out, "rejected the token")
    assert wrong not in out  # PTB's own error text carries the token
    assert out.rstrip().endswith("1 problem to fix.")


async def test_a_telegram_webhook_is_a_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], telegram: FakeTelegram, web_port: int
) -> None:
    telegram.webhook_url = "https://elsewhere.example/hook"
    env = telegram_env(telegram) | {"PARLEY_WEB__PORT": str(web_port)}
    code, out = await parley_check(monkeypatch, capsys, env, "--skip-engine")
    assert code == 1
    [line] = lines(out, "✗", "telegram")
    assert "a webhook is set (https://elsewhere.example/hook)" in line
    assert "PARLEY_TELEGRAM__TOKEN" in fix_after(out, "a webhook is set")
    assert telegram.webhook_url, "the check must not delete the webhook"


async def test_a_rejected_discord_token_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], discord: FakeDiscord, web_port: int
) -> None:
    env = discord_env(discord, "not-the-discord-token") | {"PARLEY_WEB__PORT": str(web_port)}
    code, out = await parley_check(monkeypatch, capsys, env, "--skip-engine")
    assert code == 1
    assert any("Discord rejected the token" in line for line in lines(out, "✗", "discord"))
    assert "fix: PARLEY_DISCORD__TOKEN" in fix_after(out, "Discord rejected the token")
    assert endpoints.current().api_base != discord.api_base, "the check puts discord.py's endpoints back"


async def test_discord_without_the_message_content_intent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], discord: FakeDiscord, web_port: int
) -> None:
    discord.app_flags = 1 << 14  # GATEWAY_GUILD_MEMBERS: another intent is no help
    env = discord_env(discord) | {"PARLEY_WEB__PORT": str(web_port)}
    code, out = await parley_check(monkeypatch, capsys, env, "--skip-engine")
    assert code == 1
    assert any("Message Content intent is off" in line for line in lines(out, "✗", "discord"))
    assert "Privileged Gateway Intents" in fix_after(out, "Message Content intent is off")
    assert lines(out, "✓", "discord"), "who the bot is is still reported"


@pytest.mark.parametrize(
    ("tokens", "needle", "setting"),
    [
        ({"bot_token": "xoxb-not-this-one"}, "auth.test refused the bot token", "PARLEY_SLACK__BOT_TOKEN"),
        ({"app_token": "xapp-not-this-one"}, "apps.connections.open refused the app token", "PARLEY_SLACK__APP_TOKEN"),
    ],
)
async def test_a_rejected_slack_token_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    slack: FakeSlack,
    web_port: int,
    tokens: dict[str, str],
    needle: str,
    setting: str,
) -> None:
    env = slack_env(slack, **tokens) | {"PARLEY_WEB__PORT": str(web_port)}
    code, out = await parley_check(monkeypatch, capsys, env, "--skip-engine")
    assert code == 1
    [line] = lines(out, "✗", "slack")
    assert needle in line
    assert "invalid_auth" in line
    assert f"fix: {setting}" in fix_after(out, needle)


async def test_slack_missing_a_scope_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], slack: FakeSlack, web_port: int
) -> None:
    slack.scopes = [scope for scope in slack.scopes if scope not in {"users:read", "mpim:history"}]
    env = slack_env(slack) | {"PARLEY_WEB__PORT": str(web_port)}
    code, out = await parley_check(monkeypatch, capsys, env, "--skip-engine")
    assert code == 1
    [line] = lines(out, "✗", "slack")
    assert "lacks scopes mpim:history, users:read" in line
    assert "PARLEY_SLACK__BOT_TOKEN" in fix_after(out, "lacks scopes")


async def test_slack_over_http_needs_the_signing_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], slack: FakeSlack, web_port: int
) -> None:
    env = slack_env(slack, app_token="") | {"PARLEY_WEB__PORT": str(web_port)}
    code, out = await parley_check(monkeypatch, capsys, env, "--skip-engine")
    assert code == 1
    assert "fix: PARLEY_SLACK__SIGNING_SECRET" in fix_after(out, "without a signing secret")
    env["PARLEY_SLACK__SIGNING_SECRET"] = "a-signing-secret"
    code, out = await parley_check(monkeypatch, capsys, env, "--skip-engine")
    assert code == 0
    assert "HTTP mode: signing secret set; Slack must reach <public URL>/slack/events" in out
    assert "a-signing-secret" not in out


async def test_an_unreachable_platform_is_a_problem_with_the_error_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], web_port: int
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {"PARLEY_TELEGRAM__TOKEN": TOKEN, "PARLEY_TELEGRAM__BASE_URL": dead, "PARLEY_WEB__PORT": str(web_port)}
    env |= {"PARLEY_SLACK__BOT_TOKEN": "xoxb-unreachable", "PARLEY_SLACK__API_URL": dead}
    env |= {"PARLEY_SLACK__APP_TOKEN": "xapp-unreachable"}
    code, out = await parley_check(monkeypatch, capsys, env, "--skip-engine")
    assert code == 1
    [tg] = lines(out, "✗", "telegram")
    assert f"cannot reach the Bot API at {dead}" in tg
    [sl] = lines(out, "✗", "slack")
    assert f"cannot reach the Web API at {dead}/api/" in sl
    assert "Traceback" not in out


# the engine


async def test_a_missing_model_file_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = await parley_check(monkeypatch, capsys, {"PARLEY_ENGINE__MODEL_PATH": str(tmp_path / "gone.gguf")})
    assert code == 2
    assert "✗ settings  invalid settings:" in out
    assert "PARLEY_ENGINE__MODEL_PATH: model_path" in out
    assert "is not a file" in out


async def test_a_file_that_is_not_a_model_is_an_engine_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, web_port: int
) -> None:
    corrupt = tmp_path / "model.gguf"
    corrupt.write_bytes(b"this is not a GGUF file\n" * 64)
    env = {"PARLEY_ENGINE__MODEL_PATH": str(corrupt), "PARLEY_WEB__PORT": str(web_port)}
    code, out = await parley_check(monkeypatch, capsys, env)
    assert code == 1
    [line] = lines(out, "✗", "engine")
    assert f"local, model.gguf: cannot start: cannot load model {str(corrupt)!r}" in line
    assert "fix: PARLEY_ENGINE__MODEL_PATH" in fix_after(out, "cannot start")


async def test_an_unreachable_model_server_is_an_engine_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], web_port: int
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    env = {"PARLEY_ENGINE__BACKEND": "openai", "PARLEY_ENGINE__BASE_URL": dead, "PARLEY_WEB__PORT": str(web_port)}
    code, out = await parley_check(monkeypatch, capsys, env)
    assert code == 1
    [line] = lines(out, "✗", "engine")
    assert f"openai at {dead}, model default: cannot start: cannot reach the model server" in line
    assert "PARLEY_ENGINE__BASE_URL" in fix_after(out, "cannot start")


# the web server


async def test_a_port_in_use_is_a_problem(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = await parley_check(monkeypatch, capsys, {"PARLEY_WEB__PORT": str(port)}, "--skip-engine")
    assert code == 1
    assert "✗ web" in out
    assert f"127.0.0.1:{port} is in use by another program" in out
    assert "PARLEY_WEB__PORT" in fix_after(out, "is in use")
    assert "! platforms  none configured" in out


async def test_api_keys_are_counted_never_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], web_port: int
) -> None:
    env = {
        "PARLEY_WEB__HOST": "0.0.0.0",
        "PARLEY_WEB__PORT": str(web_port),
        "PARLEY_WEB__API_KEYS": "key-one1,key-two2",
    }
    code, out = await parley_check(monkeypatch, capsys, env, "--skip-engine")
    assert code == 0
    assert f"will listen on http://0.0.0.0:{web_port}/ (the port is free); 2 API keys: the API needs one" in out
    assert "key-one1" not in out
    assert "key-two2" not in out


# the report itself


def test_the_report_format() -> None:
    findings = [
        Finding("settings", True, "valid"),
        Finding("web", False, "in use", fix="PARLEY_WEB__PORT"),
        Finding("telegram", True, "privacy mode on", fix="@BotFather", warning=True),
        Finding("engine", False, "first line\nsecond line"),
    ]
    assert format_report(findings).splitlines() == [
        "✓ settings  valid",
        "✗ web       in use",
        "            fix: PARLEY_WEB__PORT",
        "! telegram  privacy mode on",
        "            fix: @BotFather",
        "✗ engine    first line",
        "            second line",
        "",
        "2 problems to fix, 1 warning.",
    ]
    assert format_report(findings[:1], ascii_only=True).splitlines()[0] == "ok   settings  valid"
    assert masked("short") == "…"
    assert masked("0123456789abcdefXYZW") == "…XYZW"
    assert redact("token 777000:TEST-token here", ["777000:TEST-token", "abc"]) == "token *** here"


async def test_a_check_that_hangs_or_fails_becomes_one_problem() -> None:
    async def hangs() -> list[Finding]:
        await asyncio.sleep(60)
        return []

    async def fails() -> list[Finding]:
        raise ConnectionResetError("reset by peer")

    [slow] = await bounded("discord", hangs(), 0.05, "check the network")
    assert (slow.ok, slow.detail, slow.fix) == (False, "no answer within 0.05 s", "check the network")
    [broken] = await bounded("slack", fails(), 5, "PARLEY_SLACK__API_URL")
    assert (broken.ok, broken.detail) == (False, "ConnectionResetError: reset by peer")
