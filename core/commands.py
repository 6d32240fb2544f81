"""Words a user says to the bot itself rather than to the assistant: one grammar everywhere.

Slack's ``/assistant <words>`` and a message that is just a command (after the @mention in
channels, Teams chats and Slack's agent threads) both reach :func:`parse_command`. A message is
only taken for a command when it fits the grammar exactly (``use python to sort this`` is a
question, not ``use``); what comes through the slash command is always a command, and words that
do not fit there get the help text.

    help | show | list | reset | stop
    use <profile> | limit <tokens-per-day> | limit off | allow | deny | usage   (admins only)

An optional leading ``assistant`` is accepted (``assistant use analyst``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Command(Enum):
    HELP = "help"
    SHOW = "show"
    LIST = "list"
    RESET = "reset"
    STOP = "stop"
    USE = "use"
    LIMIT = "limit"
    ALLOW = "allow"
    DENY = "deny"
    USAGE = "usage"


ADMIN_COMMANDS = frozenset({Command.USE, Command.LIMIT, Command.ALLOW, Command.DENY, Command.USAGE})
_BARE = {c.value: c for c in Command if c not in (Command.USE, Command.LIMIT)}
_USE = re.compile(r"use\s+([a-z0-9][a-z0-9_-]{0,39})", re.IGNORECASE)
_LIMIT = re.compile(r"limit\s+(off|\d[\d_,]{0,15})", re.IGNORECASE)  # longer numbers: malformed


@dataclass(frozen=True)
class CommandRequest:
    command: Command
    argument: str = ""
    malformed: bool = False  # came as a command but did not fit: answered with the help text


def parse_command(text: str, *, explicit: bool = False) -> CommandRequest | None:
    """The command in ``text``; None when it is not one (then it is a question for the assistant).
    With ``explicit`` (the slash command) anything that does not fit is a malformed command."""
    words = " ".join(text.strip().rstrip("!.").split())
    if words.lower().startswith("assistant "):
        words = words[len("assistant ") :]
    elif words.lower() == "assistant":
        words = "help" if explicit else words
    if not words and explicit:
        return CommandRequest(Command.HELP)
    bare = _BARE.get(words.lower())
    if bare is not None:
        return CommandRequest(bare)
    if match := _USE.fullmatch(words):
        return CommandRequest(Command.USE, match.group(1).lower())
    if match := _LIMIT.fullmatch(words):
        return CommandRequest(Command.LIMIT, match.group(1).lower().replace("_", "").replace(",", ""))
    first, _, rest = words.lower().partition(" ")
    if explicit or (first in ("use", "limit") and " " not in rest):
        return CommandRequest(Command.HELP, malformed=True)  # e.g. "limit lots", "use" alone
    return None
