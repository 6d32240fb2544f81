"""The Slack manifests declare what the code uses, in the shape Slack accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bots.slack.adapter import BOT_SCOPES

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests" / "slack"


@pytest.mark.parametrize(("name", "socket_mode"), [("manifest.yaml", True), ("manifest-http.yaml", False)])
def test_slack_manifest(name: str, socket_mode: bool) -> None:
    manifest = yaml.safe_load((MANIFESTS / name).read_text())
    features = manifest["features"]
    assert "agent_view" in features and "assistant_view" not in features  # new apps must use agent_view
    assert len(features["agent_view"]["agent_description"]) <= 300
    assert len(features["agent_view"]["suggested_prompts"]) <= 4
    assert len(manifest["display_information"]["name"]) <= 35
    assert features["app_home"]["messages_tab_enabled"] is True
    assert features["app_home"]["home_tab_enabled"] is True  # app_home_opened publishes the Home tab
    [command] = features["slash_commands"]
    assert command["command"] == "/assistant" and command["should_escape"] is False
    assert 0 < len(command["description"]) <= 100 and len(command["usage_hint"]) <= 100
    assert "use <assistant>" in command["usage_hint"]
    if socket_mode:
        assert "url" not in command  # Socket Mode delivers commands over the socket
    else:
        assert command["url"] == manifest["settings"]["event_subscriptions"]["request_url"]
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == BOT_SCOPES
    settings = manifest["settings"]
    assert {
        "app_mention",
        "message.im",
        "message.channels",
        "message.groups",
        "message.mpim",
        "agent_session_stopped",
        "app_home_opened",
    } == set(settings["event_subscriptions"]["bot_events"])
    assert settings["socket_mode_enabled"] is socket_mode
    if not socket_mode:
        assert settings["event_subscriptions"]["request_url"].endswith("/slack/events")
