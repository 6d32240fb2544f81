"""The Slack adapter (slack-bolt AsyncApp): Socket Mode or HTTP at POST /slack/events."""
