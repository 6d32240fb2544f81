"""Settings that point the real bridge at the fakes (used by the tests and the bench)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.settings import Settings
from tests import slack_events
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack


def settings_for_fakes(openai: FakeOpenAI, slack: FakeSlack, store_path: Path, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "_env_file": None,
        "openai_api_key": "sk-test",
        "openai_base_url": openai.base_url,
        "openai_max_retries": 0,
        "slack_bot_token": "xoxb-test",
        "slack_signing_secret": slack_events.SIGNING_SECRET,
        "slack_api_url": slack.base_url,
        "store_path": str(store_path),
        "host": "127.0.0.1",
        "port": 0,
        "shutdown_grace": 5,
        **overrides,
    }
    return Settings(**options)
