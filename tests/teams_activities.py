"""Inbound Teams activities shaped like the real ones (wire JSON, camelCase), and posting them to a bot."""

from __future__ import annotations

import datetime
import html
import time
from typing import Any

import aiohttp

BOT_ID = "28:bot-app-id"
BOT_NAME = "Assistant"
TENANT = "tenant-1"
USER_ID = "29:user-1"
USER_AAD = "aad-user-1"
USER_NAME = "Test User"
AT_BOT = f"<at>{BOT_NAME}</at>"

_last_id = 0


def next_id() -> str:
    """A fresh, strictly increasing activity id shaped like Teams' (milliseconds since the epoch)."""
    global _last_id
    _last_id = max(_last_id + 1, time.time_ns() // 1_000_000)
    return str(_last_id)


def _timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(
    text: str,
    *,
    service_url: str,
    conversation: dict[str, Any],
    channel_data: dict[str, Any],
    user_id: str,
    aad_object_id: str,
    activity_id: str,
    mention: bool,
    attachments: list[dict[str, Any]],
) -> dict[str, Any]:
    entities: list[dict[str, Any]] = [{"type": "clientInfo", "locale": "en-US"}]
    if mention:
        text = f"{AT_BOT} {text}"
        entities.insert(0, {"type": "mention", "text": AT_BOT, "mentioned": {"id": BOT_ID, "name": BOT_NAME}})
    activity: dict[str, Any] = {
        "type": "message",
        "id": activity_id,
        "timestamp": _timestamp(),
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": {"id": user_id, "name": USER_NAME, "aadObjectId": aad_object_id},
        "recipient": {"id": BOT_ID, "name": BOT_NAME},
        "conversation": {**conversation, "tenantId": TENANT},
        "channelData": {**channel_data, "tenant": {"id": TENANT}},
        "locale": "en-US",
        "textFormat": "plain",
        "text": text,
        "entities": entities,
    }
    if attachments:
        activity["attachments"] = attachments
    return activity


def personal(
    text: str,
    *,
    service_url: str,
    conversation_id: str = "a:personal-1",
    user_id: str = USER_ID,
    aad_object_id: str = USER_AAD,
    activity_id: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A message in a 1:1 chat with the bot (no mention needed)."""
    return _message(
        text,
        service_url=service_url,
        conversation={"id": conversation_id, "conversationType": "personal"},
        channel_data={},
        user_id=user_id,
        aad_object_id=aad_object_id,
        activity_id=activity_id or next_id(),
        mention=False,
        attachments=list(attachments or []),
    )


def group_chat(
    text: str,
    *,
    service_url: str,
    conversation_id: str = "19:group-1@thread.v2",
    mention: bool = True,
    user_id: str = USER_ID,
    aad_object_id: str = USER_AAD,
    activity_id: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A message in a group chat; with ``mention`` it starts ``<at>Assistant</at>`` and has a mention entity."""
    return _message(
        text,
        service_url=service_url,
        conversation={"id": conversation_id, "conversationType": "groupChat", "isGroup": True},
        channel_data={},
        user_id=user_id,
        aad_object_id=aad_object_id,
        activity_id=activity_id or next_id(),
        mention=mention,
        attachments=list(attachments or []),
    )


def channel(
    text: str,
    *,
    service_url: str,
    channel_id: str = "19:channel-1@thread.tacv2",
    root_id: str | None = None,
    team_id: str = "19:team-1@thread.tacv2",
    mention: bool = True,
    user_id: str = USER_ID,
    aad_object_id: str = USER_AAD,
    activity_id: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A channel post: a new top-level post if ``root_id`` is None (its id is the thread root),
    else a reply in the thread under ``root_id``; the conversation id is ``<channel>;messageid=<root>``.

    Like Teams, it carries the text/html rendering of the post as its first attachment."""
    activity_id = activity_id or next_id()
    body = f"{AT_BOT} {html.escape(text)}" if mention else html.escape(text)
    return _message(
        text,
        service_url=service_url,
        conversation={
            "id": f"{channel_id};messageid={root_id or activity_id}",
            "conversationType": "channel",
            "isGroup": True,
        },
        channel_data={
            "team": {"id": team_id},
            "channel": {"id": channel_id},
            "teamsChannelId": channel_id,
            "teamsTeamId": team_id,
        },
        user_id=user_id,
        aad_object_id=aad_object_id,
        activity_id=activity_id,
        mention=mention,
        attachments=[
            {"contentType": "text/html", "content": f"<div><div>{body}</div></div>"},
            *(attachments or []),
        ],
    )


def conversation_update_bot_added(
    *, service_url: str, conversation_type: str = "personal", conversation_id: str = "a:personal-1"
) -> dict[str, Any]:
    """The ``conversationUpdate`` Teams sends when the bot is installed in a chat, team or channel."""
    conversation: dict[str, Any] = {
        "id": conversation_id,
        "conversationType": conversation_type,
        "tenantId": TENANT,
    }
    channel_data: dict[str, Any] = {"tenant": {"id": TENANT}}
    if conversation_type != "personal":
        conversation["isGroup"] = True
    if conversation_type == "channel":
        channel_id = conversation_id.split(";", 1)[0]
        channel_data.update(
            {
                "eventType": "teamMemberAdded",
                "team": {"id": channel_id},
                "channel": {"id": channel_id},
                "teamsChannelId": channel_id,
                "teamsTeamId": channel_id,
            }
        )
    return {
        "type": "conversationUpdate",
        "id": f"f:{next_id()}",
        "timestamp": _timestamp(),
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": {"id": USER_ID, "name": USER_NAME, "aadObjectId": USER_AAD},
        "recipient": {"id": BOT_ID, "name": BOT_NAME},
        "conversation": conversation,
        "channelData": channel_data,
        "membersAdded": [{"id": BOT_ID}],
    }


def download_info(name: str, download_url: str, file_type: str | None = None) -> dict[str, Any]:
    """A file sent in a personal chat (bots with ``supportsFiles``): a pre-authorised download link."""
    return {
        "contentType": "application/vnd.microsoft.teams.file.download.info",
        "contentUrl": f"https://contoso-my.sharepoint.com/personal/user/Documents/Microsoft Teams Chat Files/{name}",
        "name": name,
        "content": {
            "downloadUrl": download_url,
            "uniqueId": f"unique-{next_id()}",
            "fileType": file_type or name.rsplit(".", 1)[-1],
        },
    }


def pasted_image(content_url: str, content_type: str = "image/*", name: str | None = None) -> dict[str, Any]:
    """An image pasted into the message box: kept by the connector's attachment service."""
    attachment: dict[str, Any] = {"contentType": content_type, "contentUrl": content_url}
    if name:
        attachment["name"] = name
    return attachment


def channel_file(name: str) -> dict[str, Any]:
    """A file shared in a channel or group chat: a link into the team's SharePoint."""
    return {
        "contentType": "reference",
        "contentUrl": f"https://contoso.sharepoint.com/sites/team/Shared Documents/General/{name}",
        "name": name,
    }


def file_consent(
    *,
    service_url: str,
    action: str,
    context: dict[str, Any],
    upload_info: dict[str, Any] | None = None,
    reply_to_id: str | None = None,
    conversation_id: str = "a:personal-1",
) -> dict[str, Any]:
    """The invoke Teams sends when the user answers a file consent card (``context`` is the card's
    acceptContext or declineContext; ``upload_info`` only comes with ``accept``)."""
    value: dict[str, Any] = {"type": "fileUpload", "action": action, "context": context}
    if upload_info is not None:
        value["uploadInfo"] = upload_info
    activity: dict[str, Any] = {
        "type": "invoke",
        "name": "fileConsent/invoke",
        "id": f"f:{next_id()}",
        "timestamp": _timestamp(),
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": {"id": USER_ID, "name": USER_NAME, "aadObjectId": USER_AAD},
        "recipient": {"id": BOT_ID, "name": BOT_NAME},
        "conversation": {"id": conversation_id, "conversationType": "personal", "tenantId": TENANT},
        "channelData": {"tenant": {"id": TENANT}},
        "locale": "en-US",
        "value": value,
    }
    if reply_to_id:
        activity["replyToId"] = reply_to_id
    return activity


async def post(url: str, activity: dict[str, Any], *, token: str | None = None) -> int:
    """POST ``activity`` as JSON to the bot's ``/api/messages`` at ``url`` (with a Bearer ``token`` if
    given), as the Teams service does; return the HTTP status."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=activity, headers=headers) as response,
    ):
        await response.read()
        return response.status
