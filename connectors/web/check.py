"""``parley check`` for the web server: where it will listen, whether it can, and who may use it.

The port is tried the way aiohttp will bind it (every address the host resolves to, with
``SO_REUSEADDR`` as asyncio sets it on Unix), then released at once: a port held by a listening
program is taken, one left in TIME_WAIT is not.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from bot.report import Finding, problem
from bot.settings import WebSettings

SUBJECT = "web"


def _try_bind(host: str, port: int) -> None:
    """Raise ``OSError`` (or ``socket.gaierror``) if aiohttp could not listen on ``host:port``."""
    for family, kind, proto, _name, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)


def url_of(settings: WebSettings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}/"


async def check(settings: WebSettings) -> list[Finding]:
    if not settings.enabled:
        return [Finding(SUBJECT, True, "off (PARLEY_WEB__ENABLED=false): no chat page, HTTP API or /healthz")]
    where = f"{settings.host}:{settings.port}"
    try:
        await asyncio.to_thread(_try_bind, settings.host, settings.port)
    except socket.gaierror as exc:
        return [problem(SUBJECT, f"host {settings.host!r} does not resolve: {exc.strerror}", "PARLEY_WEB__HOST")]
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fix = "stop the program that holds it, or set PARLEY_WEB__PORT to a free port"
            return [problem(SUBJECT, f"{where} is in use by another program", fix)]
        if exc.errno == errno.EADDRNOTAVAIL:
            fix = "PARLEY_WEB__HOST: an address of this machine (0.0.0.0 for all)"
            return [problem(SUBJECT, f"{settings.host} is not an address of this machine", fix)]
        if exc.errno == errno.EACCES:
            return [problem(SUBJECT, f"no permission to listen on {where}", "PARLEY_WEB__PORT: 1024 or above")]
        fix = "PARLEY_WEB__HOST, PARLEY_WEB__PORT"
        return [problem(SUBJECT, f"cannot listen on {where}: {exc.strerror or exc}", fix)]
    port = "a free port chosen at start" if settings.port == 0 else "the port is free"
    keys = len(settings.api_keys)
    if keys:
        access = f"{keys} API key{'s' if keys > 1 else ''}: the API needs one"
    else:
        access = "no API keys: anyone who can reach it can chat (it is loopback only)"
    return [Finding(SUBJECT, True, f"will listen on {url_of(settings)} ({port}); {access}")]
