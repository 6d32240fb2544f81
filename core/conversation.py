"""The conversation key: which chat thread a message belongs to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ConversationKey:
    """One chat thread, across platforms.

    ``platform`` is ``"slack"`` or ``"teams"``; ``workspace`` the Slack team (or enterprise) id or
    the Teams tenant id; ``channel`` the channel, DM or chat id; ``thread`` the id of the thread's
    root message (Slack ``thread_ts or ts``; Teams the reply chain's root, or ``""`` for a chat that
    is one conversation). Each adapter builds keys in exactly one place.
    """

    platform: str
    workspace: str
    channel: str
    thread: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.workspace}:{self.channel}:{self.thread}"

    @classmethod
    def parse(cls, value: str) -> ConversationKey:
        # Teams chat ids hold colons ("19:…@thread.v2", "a:…"); workspace and thread ids never do.
        platform, workspace, rest = value.split(":", 2)
        channel, thread = rest.rsplit(":", 1)
        return cls(platform, workspace, channel, thread)
