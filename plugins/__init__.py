"""Built-in plugins. Third-party plugins use the same API (``bot.plugin``); see docs/plugins.md."""
