"""Slack Events API payloads shaped like the real ones, and signing them."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from slack_sdk.signature import SignatureVerifier

SIGNING_SECRET = "test-signing-secret"
TEAM = "T1"
BOT_USER = "UBOT"

_ts = itertools.count(1)


def next_ts() -> str:
    return f"{1_700_000_000 + next(_ts)}.000100"


def event_callback(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "token": "verification-token",
        "team_id": TEAM,
        "api_app_id": "A1",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_ts)}",
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True, "enterprise_id": None}],
    }


def mention(
    text: str, *, channel: str = "C1", ts: str | None = None, thread_ts: str | None = None, user: str = "U1"
) -> dict[str, Any]:
    ts = ts or next_ts()
    event = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": TEAM,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(
    text: str,
    *,
    channel: str = "C1",
    channel_type: str = "channel",
    ts: str | None = None,
    thread_ts: str | None = None,
    user: str = "U1",
    **extra: Any,
) -> dict[str, Any]:
    ts = ts or next_ts()
    event = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "channel_type": channel_type,
        "team": TEAM,
        **extra,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def signed_headers(body: bytes, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    timestamp = timestamp or int(time.time())
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(timestamp), body=body)
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": signature or "",
    }


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()
