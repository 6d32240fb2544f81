"""The exception family raised at the core's seams."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.events import Failure


class BridgeError(Exception):
    """Base of every error assistant-bridge raises on purpose."""


class ConfigError(BridgeError):
    """A configuration file or setting is wrong. The message names the file, the key and why."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        super().__init__(f"{source}: {key}: {reason}" if key else f"{source}: {reason}")


class ConversationGone(BridgeError):
    """The backend no longer knows the conversation id the store holds for a thread."""


class BackendFailed(BridgeError):
    """A backend call outside the stream failed (e.g. opening a conversation); carries the failure."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(f"{failure.kind.value}: {failure.detail}")


class BackendUnreachable(BridgeError):
    """``check()`` could not reach or use a backend; the message says why in plain words."""
