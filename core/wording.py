"""Every sentence a user may see from the core, in one place."""

from __future__ import annotations

import math

from core.events import Failure, FailureKind

_FAILURES: dict[FailureKind, str] = {
    FailureKind.RATE_LIMITED: "The assistant is getting too many requests right now.",
    FailureKind.CONTEXT_TOO_LONG: (
        "This conversation has grown too long for the assistant. Start a new thread to continue."
    ),
    FailureKind.CONTENT_FILTERED: "The assistant's content filter blocked this answer.",
    FailureKind.INCOMPLETE_OUTPUT_LIMIT: "(The answer was cut short: it reached its length limit.)",
    FailureKind.INCOMPLETE_OTHER: "(The answer was cut short before it was complete.)",
    FailureKind.FAILED: "Sorry, the assistant could not answer this time. Please try again.",
    FailureKind.UNAVAILABLE: "The assistant cannot be reached right now. Please try again in a minute.",
    FailureKind.TIMEOUT: "The assistant took too long to answer. Please try again.",
    FailureKind.TOO_MANY_TOOL_ROUNDS: (
        "The assistant kept calling tools without reaching an answer, so I stopped it."
    ),
    FailureKind.QUEUE_FULL: "Too many messages are waiting in this thread; please wait for the answers.",
    FailureKind.STOPPED: "Stopped.",
    FailureKind.SHUTTING_DOWN: "The assistant is restarting. Please send your message again in a minute.",
    FailureKind.MISCONFIGURED: "The assistant is not set up correctly. An admin has to check its settings.",
}


def failure_message(failure: Failure) -> str:
    """The short sentence shown to the user for ``failure``."""
    text = _FAILURES[failure.kind]
    if failure.kind is FailureKind.RATE_LIMITED:
        if failure.retry_after:
            return f"{text} Please try again in {math.ceil(failure.retry_after)} seconds."
        return f"{text} Please try again in a minute."
    return text


def tool_progress(tool: str, name: str | None = None) -> str:
    """Status line while a tool runs."""
    labels = {
        "code_interpreter": "Running code…",
        "file_search": "Searching files…",
        "web_search": "Searching the web…",
        "image_generation": "Drawing an image…",
    }
    if tool == "function":
        return f"Calling {name}…"
    return labels.get(tool, "Working…")


THINKING = "Thinking…"
EMPTY_ANSWER = "(The assistant returned an empty answer.)"
STILL_WORKING = "Still working on it…"
IMAGES_BELOW = "(The assistant answered with the image below.)"
FILES_BELOW = "(The assistant answered with the file below.)"
SOURCES = "Sources"


NAME_LIMIT = 120  # characters of a file name shown in a sentence


def display_name(name: str) -> str:
    """A file name as shown in a sentence: on one line, and long ones shortened in the middle
    (a name is data from a user or the model, and may be of any length)."""
    name = " ".join(name.split())
    if len(name) <= NAME_LIMIT:
        return name
    half = (NAME_LIMIT - 1) // 2
    return f"{name[:half]}…{name[-half:]}"


def upload_failed(filename: str) -> str:
    return f"I could not attach {display_name(filename)} here."


NOTHING_TO_STOP = "Nothing is running in this thread."
RESET_DONE = "Done: the next message here starts a new conversation with the assistant."
HELP = (
    "Ask me anything here and I will answer in this thread. "
    "Say one of these on its own (or use `/assistant <command>` in Slack) to talk to me rather "
    "than the assistant:\n"
    "- `help`: this list\n"
    "- `show`: which assistant answers here, and the limits\n"
    "- `list`: the assistants there are\n"
    "- `reset`: start a new conversation in this thread\n"
    "- `stop`: stop the answer being written\n"
    "Admins only: `use <assistant>`, `limit <tokens per day>` or `limit off`, `allow`, `deny`, `usage`."
)
HELLO = "Hi! Ask me anything in this thread and I will answer here."


# Why a file the user sent did not reach the assistant (after "I could not use x: ").
UPLOAD_FAILED = "the upload to the assistant failed"
INDEX_FAILED = "it could not be prepared for search"
INDEX_SLOW = "it is still being prepared for search; ask about it again in a minute"
SHARED_STORE = (
    "this assistant searches a document library shared with everyone who uses it, "
    "and your file would be added to it"
)


def indexing_file(name: str) -> str:
    return f"Indexing {display_name(name)}…"


def reading_file(name: str) -> str:
    return f"Reading {display_name(name)}…"


def uploading_file(name: str) -> str:
    return f"Uploading {display_name(name)}…"


def file_refused(name: str, reason: str) -> str:
    return f"⚠️ I could not use {display_name(name)}: {reason}."


FILES_ONLY = "Please look at the attached file."
FILE_UNSUPPORTED = "I cannot read this type of file"
FILE_NO_TOOL = {
    "data": "this assistant has no code interpreter to open it",
    "document": "this assistant cannot search documents of this type",
}
TOO_MANY_FILES = "only the first {limit} files of a message are read"


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.3g} MB"


def file_too_large(limit_bytes: int) -> str:
    return f"it is larger than the {_megabytes(limit_bytes)} limit for a file"


def message_too_large(limit_bytes: int) -> str:
    return f"the files of this message are larger than the {_megabytes(limit_bytes)} limit together"


DOWNLOAD_FAILED = "the download failed; please try again"
FILE_FORBIDDEN = "the bot is not allowed to read it"
FILE_LOGIN_PAGE = "a sign-in page came back instead of the file, so the bot may not have access to it"
FILE_HOST_NOT_ALLOWED = "it is not stored where the bot may download files from"
FILE_IN_CHANNEL = (
    "files shared in channels and group chats are out of the bot's reach; send it in a personal chat"
)


def file_only_in_personal_chat(name: str) -> str:
    return (
        f"I made {display_name(name)}, but I can only send files in a personal chat: ask me there to get it."
    )


def file_upload_declined(name: str) -> str:
    return f"OK, I did not upload {display_name(name)}."


def file_upload_expired(name: str) -> str:
    return f"{display_name(name)} is no longer available: ask me again to make it."


NOT_ADMIN = "Only the bot's admins can do that. Nothing was changed."
MALFORMED_COMMAND = "I did not understand that command. Nothing was changed."
DENIED_HERE = "I'm switched off in this channel. An admin can switch me on here with `allow`."
NOT_ALLOWED_HERE = "I'm not set up to answer in this channel. An admin can allow it with `allow`."
DMS_OFF = "I don't answer direct messages here. Please ask in a channel where I'm set up."
NOT_FOR_YOU = "I'm only set up to answer some people here. Please ask an admin for access."
NO_GUESTS = "I don't answer guest accounts. Please ask an admin for access."
ALLOWED_HERE = "Done: I answer in this channel now."
DENIED_NOW = "Done: I no longer answer in this channel (admins can still use commands here)."
LIMIT_OFF = "Done: no daily token limit in this channel now."


def limit_set(tokens: int) -> str:
    return f"Done: this channel may use {tokens:,} tokens a day (UTC)."


def switched(profile: str) -> str:
    return f"Done: `{profile}` answers in this channel from the next message on."


def unknown_profile(name: str, names: list[str]) -> str:
    return f"There is no assistant called `{name}`. There are: {', '.join(f'`{n}`' for n in names)}."


def show(profile: str, description: str, model: str, limit: int, used: int) -> str:
    about = f" ({description})" if description else ""
    budget = (
        f"{limit:,} tokens a day, {used:,} used today (UTC)"
        if limit
        else f"no daily limit ({used:,} used today)"
    )
    return f"Here `{profile}`{about} answers, with model `{model}`. Budget: {budget}."


def profile_list(entries: list[tuple[str, str, bool]]) -> str:
    lines = ["The assistants:"]
    for name, description, here in entries:
        lines.append(
            f"- `{name}`{': ' + description if description else ''}{' (answers here)' if here else ''}"
        )
    return "\n".join(lines)


def usage(today_tokens: int, today_turns: int, month_tokens: int, month_turns: int) -> str:
    return (
        f"This channel used {today_tokens:,} tokens in {today_turns:,} answers today and "
        f"{month_tokens:,} tokens in {month_turns:,} answers this month (UTC)."
    )


def channel_budget_spent(limit: int) -> str:
    return f"This channel has used its {limit:,} tokens for today. I'll answer again after midnight UTC."


def user_budget_spent(limit: int) -> str:
    return f"You have used your {limit:,} tokens for today. I'll answer you again after midnight UTC."
