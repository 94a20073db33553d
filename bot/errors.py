"""Parley's exceptions.

Every error the project raises derives from :class:`ParleyError`::

    ParleyError
    ├── ConfigError                 a setting is missing or wrong; start-up stops
    ├── StoreError                  the database cannot be opened or migrated
    ├── ConnectorError              a platform call failed
    │   ├── RateLimited             the platform said "slow down"; carries ``retry_after``
    │   ├── MessageTooLong          the platform refused the text for its length
    │   ├── FileTooLarge            an attachment is larger than the download limit
    │   └── NativeRefused           the platform refused its native streaming API; edits take over
    ├── EngineError                 the model cannot answer
    │   ├── ContextOverflow         the message cannot fit the context window even alone
    │   └── EngineBusy              no engine slot was free in time
    ├── PluginError                 a plugin failed to load or a command failed
    │   └── CommandError            a command's arguments or permissions are wrong
    └── ApiError                    (connectors.web) an HTTP API request answered with an error status

``user_message`` is the short text a chat user sees; ``str(error)`` is for the log.
"""

from __future__ import annotations


class ParleyError(Exception):
    """Root of Parley's exceptions."""

    user_message: str = "Something went wrong while answering. Please try again."

    def __init__(self, message: str, *, user_message: str | None = None) -> None:
        super().__init__(message)
        if user_message is not None:
            self.user_message = user_message


class ConfigError(ParleyError):
    """A setting is missing or has a wrong value."""


class StoreError(ParleyError):
    """The conversation store failed."""


class ConnectorError(ParleyError):
    """A call to a chat platform failed."""

    user_message = "The reply could not be delivered to this chat."


class RateLimited(ConnectorError):
    """The platform asked us to wait ``retry_after`` seconds before the next call."""

    def __init__(self, retry_after: float, message: str = "") -> None:
        super().__init__(message or f"rate limited for {retry_after:.2f}s")
        self.retry_after = max(0.0, float(retry_after))


class MessageTooLong(ConnectorError):
    """The platform refused a message for its length."""


class FileTooLarge(ConnectorError):
    """An attachment turned out larger than the download limit (the download was stopped)."""


class NativeRefused(ConnectorError):
    """The platform does not take its native streaming method here (an older server, a workspace
    without the feature, a method error); the reply continues with send/edit."""


class EngineError(ParleyError):
    """The language model could not produce a reply."""

    user_message = "The model could not answer just now. Please try again."


class ContextOverflow(EngineError):
    """The prompt does not fit the model's context window, even with no history."""

    user_message = "That message is too long for the model's context window. Please shorten it."


class EngineBusy(EngineError):
    """No generation slot became free in time."""

    user_message = "The bot is busy with other replies. Please try again in a moment."


class PluginError(ParleyError):
    """A plugin could not be loaded or failed while running."""


class CommandError(PluginError):
    """A command was called with wrong arguments or by someone not allowed to."""

    def __init__(self, message: str) -> None:
        super().__init__(message, user_message=message)
