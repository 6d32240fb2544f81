"""The bot's App Home tab: which assistant answers in your DM with the bot, and for admins the
defaults from the profiles file and the assistants there are."""

from __future__ import annotations

from typing import Any

from bots.slack.text import neutralise
from core.admin import ChannelAdmin
from core.conversation import ConversationKey
from core.messages import InboundMessage

_TEXT_LIMIT = 3000  # a section's text


async def home_view(
    admin: ChannelAdmin, *, team: str, user: str, dm_channel: str | None, roles: frozenset[str]
) -> dict[str, Any]:
    """A Block Kit ``home`` view for ``user``: the assistant in their DM with the bot (or why the
    bot will not answer them there, by the same rules as a message), and for admins the defaults,
    the assistants and every channel an admin has set."""
    policy = admin.profiles.policy
    blocks: list[dict[str, Any]] = [_header("Your assistant")]
    if dm_channel:
        key = ConversationKey("slack", team, dm_channel, "")
        as_if = InboundMessage(key, user, "", (), place="dm", user_roles=roles)
        refusal = await admin.refusal(as_if)
        profile = await admin.profile_for(as_if)
        if refusal is not None:
            blocks.append(_section(refusal))
        else:
            line = f"In your messages with me, *{profile.name}* answers"
            blocks.append(
                _section(line + (f": {neutralise(profile.description)}" if profile.description else "."))
            )
    blocks.append(
        _section(
            "Mention me in a channel to ask there. Type `/assistant show` in a channel to see which "
            "assistant answers there, and `/assistant help` for everything else."
        )
    )
    if policy.is_admin("slack", user, roles):
        blocks += [_header("For admins: defaults"), _section(_defaults(admin))]
        blocks += [_header("Assistants"), _section(_assistants(admin))]
        blocks += [_header("Channels set by admins"), _section(await _channels(admin, team))]
        blocks.append(
            _section(
                "Change a channel with `/assistant use <assistant>`, `limit <tokens per day>`, "
                "`limit off`, `allow`, `deny`; `/assistant usage` shows what it has spent."
            )
        )
    return {"type": "home", "blocks": blocks}


def _defaults(admin: ChannelAdmin) -> str:
    policy = admin.profiles.policy
    limit = policy.channel_daily_tokens
    user_limit = policy.user_daily_tokens
    channels = ", ".join(f"<#{c}>" for c in sorted(policy.channels)) or "every channel I'm in"
    lines = [
        f"• Assistant: *{admin.profiles.default_name}*",
        f"• Channels: {channels}",
        f"• Direct messages: {'yes' if policy.dms else 'no'}",
        f"• Guests: {'yes' if policy.guests else 'no'}",
        f"• Tokens per channel per day: {f'{limit:,}' if limit else 'no limit'}",
        f"• Tokens per user per day: {f'{user_limit:,}' if user_limit else 'no limit'}",
    ]
    return "\n".join(lines)


def _assistants(admin: ChannelAdmin) -> str:
    lines = []
    for profile in admin.profiles.profiles.values():
        model = profile.model or (profile.assistants.assistant_id if profile.assistants else "")
        line = f"• *{profile.name}*" + (f" ({model})" if model else "")
        lines.append(line + (f": {neutralise(profile.description)}" if profile.description else ""))
    return "\n".join(lines)


async def _channels(admin: ChannelAdmin, team: str) -> str:
    """One line per channel of this workspace whose settings an admin has changed."""
    lines = []
    for where, settings in (await admin.book.all_settings()).items():
        platform, workspace, channel = where.split(":", 2)
        if platform != "slack" or workspace != team:
            continue
        answers = {None: "answers as the defaults say", True: "allowed", False: "denied"}[settings.answers]
        limit = (
            "default limit"
            if settings.daily_tokens is None
            else (f"{settings.daily_tokens:,} tokens a day" if settings.daily_tokens else "no limit")
        )
        lines.append(
            f"• <#{channel}>: *{settings.profile or admin.profiles.default_name}*, {limit}, {answers}"
        )
    return "\n".join(lines) or "No channel has settings of its own yet."


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def _section(text: str) -> dict[str, Any]:
    """Our own mrkdwn; text from elsewhere is neutralised before it gets here."""
    if len(text) > _TEXT_LIMIT:  # whole lines only: a cut mention or link would show as junk
        text = text[: text.rfind("\n", 0, _TEXT_LIMIT - 20)] + "\n…and more"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}
