"""Words a user can say to the bot itself rather than to the assistant.

One grammar for every platform: Slack messages in the bot's threads and Teams messages after the
@mention both reach :func:`parse_command` before anything goes to a backend.
"""

from __future__ import annotations

from enum import Enum


class Command(Enum):
    HELP = "help"
    RESET = "reset"
    STOP = "stop"


def parse_command(text: str) -> Command | None:
    """The command ``text`` is, if it is exactly one (case and surrounding space ignored)."""
    word = text.strip().lower().rstrip("!.")
    return next((command for command in Command if command.value == word), None)
