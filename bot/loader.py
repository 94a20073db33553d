"""Finding and loading plugins.

Built-ins are the modules listed in :data:`BUILTINS`; third-party plugins are found through the
entry-point group ``parley.plugins``. An entry point (or a built-in module) provides ``plugin``:
a :class:`~bot.plugin.Plugin`, or a function returning one (called once per app, so a plugin can
keep state without module globals). ``PARLEY_PLUGINS__DISABLED`` lists plugin names to skip. A
plugin that fails to import, declares a bad command or has invalid settings is reported by name
and skipped; the bot still starts.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType

from pydantic import ValidationError

from bot.command import NAME
from bot.plugin import Plugin
from bot.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "parley.plugins"
BUILTINS = ("plugins.core", "plugins.limits")


@dataclass
class Loaded:
    plugins: list[Plugin] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """One line per plugin that was skipped, naming it and why."""


def _resolve(source: str, obj: object) -> Plugin:
    if isinstance(obj, ModuleType):
        obj = getattr(obj, "plugin", None)
        if obj is None:
            raise TypeError(f"{source} has no `plugin` attribute")
    if not isinstance(obj, Plugin) and callable(obj):
        obj = obj()
    if not isinstance(obj, Plugin):
        raise TypeError(f"{source} provides {type(obj).__name__}, not a bot.plugin.Plugin")
    return obj


def _candidates() -> list[tuple[str, Callable[[], object]]]:
    found: list[tuple[str, Callable[[], object]]] = [
        (name, functools.partial(importlib.import_module, name)) for name in BUILTINS
    ]
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.append((f"entry point {entry.name!r} ({entry.value})", entry.load))
    return found


def load_plugins(settings: Settings) -> Loaded:
    loaded = Loaded()
    disabled = {name.lower() for name in settings.plugins.disabled}
    names: set[str] = set()
    for source, load in _candidates():
        try:
            plugin = _resolve(source, load())
        except Exception as exc:  # noqa: BLE001 - a third-party import can raise anything; report it, go on
            loaded.problems.append(f"{source}: failed to load: {exc!r}")
            continue
        if plugin.name.lower() in disabled:
            log.info("plugin %s: disabled by PARLEY_PLUGINS__DISABLED", plugin.name)
            continue
        problem = _check(plugin, names)
        if problem is None and plugin.settings_model is not None:
            try:
                plugin.settings = plugin.settings_model(**settings.plugins.of(plugin.name))
            except ValidationError as exc:
                details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                problem = f"invalid settings (PARLEY_PLUGINS__{plugin.name.upper()}__…): {details}"
        if problem is not None:
            loaded.problems.append(f"plugin {plugin.name} ({source}): {problem}")
            continue
        names.add(plugin.name)
        loaded.plugins.append(plugin)
    for line in loaded.problems:
        log.error("skipped %s", line)
    return loaded


def _check(plugin: Plugin, names: set[str]) -> str | None:
    if not NAME.match(plugin.name):
        return f"the name must match {NAME.pattern}"
    if plugin.name in names:
        return "another plugin has the same name"
    if plugin.router.errors:
        return "bad command declaration: " + "; ".join(plugin.router.errors)
    return None
