"""The assistant-bridge command as a newcomer meets it: missing settings, bad config, check, and a
graceful stop on SIGTERM, run as a real process against the fakes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from bots.slack.adapter import BOT_SCOPES
from tests import slack_events
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack

ROOT = Path(__file__).resolve().parent.parent
CONFIG = 'default = "general"\n[assistants.general]\nmodel = "gpt-test"\ninstructions = "Be brief."\n'


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    env.update(extra)
    return env


async def run_cli(tmp_path: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        *args,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def wait_healthy(http: aiohttp.ClientSession, url: str) -> None:
    """Wait for a just-started ``serve`` to answer /healthz."""
    for _ in range(200):
        try:
            async with http.get(f"{url}/healthz") as health:
                if health.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.05)
    raise AssertionError("serve did not come up")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_without_settings_names_each_missing_variable(tmp_path: Path) -> None:
    (tmp_path / "assistants.toml").write_text(CONFIG)
    code, _, err = await run_cli(tmp_path, "serve", env=base_env(tmp_path))
    assert code == 2
    for variable in ("OPENAI_API_KEY", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        assert f"missing {variable}:" in err
    assert "api.slack.com/apps" in err


async def test_serve_with_bad_config_names_file_key_and_reason(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('default = "general"\n[assistants.general]\ntemperature = 1\n')
    env = base_env(tmp_path, OPENAI_API_KEY="sk-x", SLACK_BOT_TOKEN="xoxb-x", SLACK_SIGNING_SECRET="s")
    code, _, err = await run_cli(tmp_path, "serve", "--config", "bad.toml", env=env)
    assert code == 2
    assert "config error: bad.toml: assistants.general: model is required for the responses backend" in err


async def test_settings_can_come_from_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / "assistants.toml").write_text(CONFIG)
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-x\nSLACK_BOT_TOKEN=xoxb-x\n")
    code, _, err = await run_cli(tmp_path, "serve", env=base_env(tmp_path))
    assert code == 2
    assert "missing SLACK_SIGNING_SECRET" in err and "missing OPENAI_API_KEY" not in err


async def test_check_reaches_slack_and_the_backend(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack
) -> None:
    (tmp_path / "assistants.toml").write_text(CONFIG)
    env = base_env(
        tmp_path,
        OPENAI_API_KEY="sk-x",
        OPENAI_BASE_URL=fake_openai.base_url,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET="s",
        SLACK_API_URL=fake_slack.base_url,
    )
    code, out, err = await run_cli(tmp_path, "check", env=env)
    assert code == 0, err
    assert "slack ok" in out and "backend ok: general" in out and "all checks passed" in out

    fake_slack.scopes = set(BOT_SCOPES) - {"files:read", "users:read"}  # installed before files
    code, _, err = await run_cli(tmp_path, "check", env=env)
    assert code == 1 and "slack: the app lacks the scopes files:read, users:read" in err
    fake_slack.scopes = set(BOT_SCOPES) | {"reactions:write"}
    code, _, err = await run_cli(tmp_path, "check", env=env)
    assert code == 0, err

    env["SLACK_BOT_TOKEN"] = "xoxb-wrong"
    code, _, err = await run_cli(tmp_path, "check", env=env)
    assert code == 1 and "slack: the bot token was refused (invalid_auth)" in err


async def test_sigterm_lets_the_running_turn_finish_then_exits(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_slack: FakeSlack
) -> None:
    (tmp_path / "assistants.toml").write_text(CONFIG)
    port = free_port()
    env = base_env(
        tmp_path,
        OPENAI_API_KEY="sk-x",
        OPENAI_BASE_URL=fake_openai.base_url,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=slack_events.SIGNING_SECRET,
        SLACK_API_URL=fake_slack.base_url,
        HOST="127.0.0.1",
        ASSISTANT_BRIDGE_SHUTDOWN_GRACE="10",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "serve",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, url)
            fake_openai.first_token_delay = 1.0
            event = slack_events.mention("a slow question")
            body = slack_events.encode(slack_events.event_callback(event))
            async with http.post(
                f"{url}/slack/events", data=body, headers=slack_events.signed_headers(body)
            ) as r:
                assert r.status == 200
            await fake_slack.wait_for(lambda: len(fake_openai.requests) == 1)
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 15)
            assert code == 0
            [answer] = fake_slack.messages("C1", event["ts"])
            assert answer.stopped and answer.text == "You said: a slow question"
            try:
                async with http.get(f"{url}/healthz"):
                    raise AssertionError("the server still takes requests after shutdown")
            except aiohttp.ClientConnectionError:
                pass
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stderr = (await process.stderr.read()).decode()
    assert "shutting down" in stderr and "stopped" in stderr
    assert "a slow question" not in stderr  # no message bodies in the log


async def test_check_says_when_the_model_does_not_exist(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    (tmp_path / "assistants.toml").write_text(CONFIG.replace("gpt-test", "gpt-nope"))
    env = base_env(tmp_path, OPENAI_API_KEY="sk-x", OPENAI_BASE_URL=fake_openai.base_url)
    code, _, err = await run_cli(tmp_path, "check", env=env)
    assert code == 1
    assert "backend: profile general: model or deployment 'gpt-nope' not found" in err
    assert "missing SLACK_BOT_TOKEN" in err


async def test_teams_settings_are_checked_before_serving(tmp_path: Path) -> None:
    (tmp_path / "assistants.toml").write_text(CONFIG)
    app_id = "11111111-2222-3333-4444-555555555555"
    env = base_env(tmp_path, OPENAI_API_KEY="sk-x", MicrosoftAppId=app_id)
    code, _, err = await run_cli(tmp_path, "serve", env=env)
    assert code == 2
    assert "missing MicrosoftAppPassword" in err and "missing MicrosoftAppTenantId" in err
    assert "SLACK" not in err  # Teams alone is enough

    env.update(MicrosoftAppType="UserAssignedMSI", TEAMS_ALLOW_ANONYMOUS="true")
    code, _, err = await run_cli(tmp_path, "serve", env=env)
    assert code == 2
    assert "conflicting TEAMS_ALLOW_ANONYMOUS" in err and "MicrosoftAppPassword" not in err


async def test_serve_with_teams_only_answers_on_api_messages(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    from tests import teams_activities as T
    from tests.fakes.teams_connector import FakeConnector

    (tmp_path / "assistants.toml").write_text(CONFIG)
    port = free_port()
    env = base_env(
        tmp_path,
        OPENAI_API_KEY="sk-x",
        OPENAI_BASE_URL=fake_openai.base_url,
        TEAMS_ALLOW_ANONYMOUS="true",
        HOST="127.0.0.1",
    )
    code, out, err = await run_cli(tmp_path, "check", env=env)
    assert code == 0 and "all checks passed" in out
    assert "teams: /api/messages takes requests without a token" in err
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli", "serve", "--port", str(port),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with FakeConnector() as connector, aiohttp.ClientSession() as http:
            await wait_healthy(http, url)
            post = T.channel("a secret question", service_url=connector.service_url)
            assert await T.post(f"{url}/api/messages", post) == 202
            await connector.wait_for(lambda: bool(connector.visible(post["conversation"]["id"])))
            [answer] = connector.visible(post["conversation"]["id"])
            assert answer.text == "You said: a secret question"
            async with http.post(f"{url}/slack/events", data=b"{}") as slack:
                assert slack.status == 404  # Slack is not configured
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    stderr = (await process.stderr.read()).decode()
    assert "TEAMS IS OPEN TO ANYONE" in stderr and "teams=/api/messages" in stderr
    assert "a secret question" not in stderr  # no message bodies in the log


async def test_audit_prints_every_change_without_other_settings(tmp_path: Path) -> None:
    from core.channels import AuditEntry, SqliteChannelBook

    env = base_env(tmp_path, ASSISTANT_BRIDGE_STORE=str(tmp_path / "store.sqlite"))
    code, out, _ = await run_cli(tmp_path, "audit", env=env)
    assert code == 0 and out.strip() == "no changes recorded"  # no store yet

    book = SqliteChannelBook(tmp_path / "store.sqlite")
    await book.audit(
        AuditEntry(86_400.0, "U-admin", "slack:T1:C1", "use", "profile=default", "profile=analyst")
    )
    await book.audit(
        AuditEntry(90_061.5, "aad-admin", "teams:t:19:c@thread", "deny", "answers=default", "answers=denied")
    )
    await book.close()

    code, out, err = await run_cli(tmp_path, "audit", env=env)  # no Slack, Teams or OpenAI settings
    assert code == 0, err
    assert out.splitlines() == [
        "1970-01-02T00:00:00Z  U-admin  slack:T1:C1  use  profile=default -> profile=analyst",
        "1970-01-02T01:01:01Z  aad-admin  teams:t:19:c@thread  deny  answers=default -> answers=denied",
    ]
    code, _, err = await run_cli(tmp_path, "audit", "--store", str(tmp_path / "typo.sqlite"), env=env)
    assert code == 1 and "audit: no store at" in err
