"""The Teams app package declares what the bot does, in the shape Teams accepts, and the
``teams-package`` command builds it with no other settings."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bots.teams.package import build_package, render_manifest
from core.commands import Command
from tests.test_cli import base_env, run_cli

TEMPLATE = Path(__file__).resolve().parent.parent / "manifests" / "teams"
BOT_ID = "0b6c5a3e-1f2d-4c8b-9a7e-3d5f6e7a8b9c"
TEAMS_APP_ID = "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6"
ALL_SCOPES = {"personal", "team", "groupChat"}


def zips_in(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.zip"))


def template() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((TEMPLATE / "manifest.json").read_text())
    return manifest


def test_manifest_template_has_the_shape_teams_accepts() -> None:
    manifest = template()
    version = tuple(int(part) for part in manifest["manifestVersion"].split("."))
    assert version >= (1, 25)
    assert manifest["$schema"].endswith(f"/v{manifest['manifestVersion']}/MicrosoftTeams.schema.json")
    assert manifest["id"] == "{{TEAMS_APP_ID}}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert len(manifest["name"]["short"]) <= 30 and len(manifest["name"]["full"]) <= 100
    assert len(manifest["description"]["short"]) <= 80 and len(manifest["description"]["full"]) <= 4000
    assert re.fullmatch(r"#[0-9A-Fa-f]{6}", manifest["accentColor"])
    assert manifest["icons"] == {"color": "color.png", "outline": "outline.png"}
    developer = manifest["developer"]
    assert developer["name"]
    for key in ("websiteUrl", "privacyUrl", "termsOfUseUrl"):
        assert developer[key].startswith("https://")
    assert "*.botframework.com" in manifest["validDomains"]
    assert "webApplicationInfo" not in manifest

    [bot] = manifest["bots"]
    assert bot["botId"] == "{{BOT_ID}}"
    assert set(bot["scopes"]) == ALL_SCOPES
    # from 1.25 the team scope is rejected on upload without this, at the ROOT (not in the bot)
    assert manifest["supportsChannelFeatures"] == "tier1" and "supportsChannelFeatures" not in bot
    assert bot["supportsFiles"] is True  # file consent cards and received files need it
    assert bot["isNotificationOnly"] is False


def test_command_lists_name_the_commands_the_bot_understands_within_teams_limits() -> None:
    [bot] = template()["bots"]
    lists = bot["commandLists"]
    assert 1 <= len(lists) <= 3
    for command_list in lists:
        assert set(command_list["scopes"]) <= ALL_SCOPES
        assert 1 <= len(command_list["commands"]) <= 10
        for command in command_list["commands"]:
            assert 0 < len(command["title"]) <= 32 and 0 < len(command["description"]) <= 128
    titles = {command["title"] for command in lists[0]["commands"]}
    assert titles == {command.value for command in Command}  # hints only: the words core parses
    assert set(lists[0]["scopes"]) == ALL_SCOPES


def test_icons_have_teams_sizes_and_the_outline_is_white_on_transparent() -> None:
    with Image.open(TEMPLATE / "color.png") as color:
        assert color.format == "PNG" and color.size == (192, 192)
    with Image.open(TEMPLATE / "outline.png") as outline:
        assert outline.format == "PNG" and outline.size == (32, 32) and outline.mode == "RGBA"
        data = outline.tobytes()
    pixels = [tuple(data[i : i + 4]) for i in range(0, len(data), 4)]
    assert all(alpha == 0 or (r, g, b) == (255, 255, 255) for r, g, b, alpha in pixels)
    alphas = {pixel[3] for pixel in pixels}
    assert 0 in alphas and 255 in alphas  # a glyph on a transparent background, not a blank square


def test_render_fills_ids_host_name_and_version() -> None:
    manifest = render_manifest(
        BOT_ID, app_id=TEAMS_APP_ID, host="Bot.Example.com", name="Ask HR", version="1.2.3"
    )
    assert manifest["id"] == TEAMS_APP_ID and manifest["bots"][0]["botId"] == BOT_ID
    assert manifest["developer"]["websiteUrl"] == "https://bot.example.com"
    assert manifest["developer"]["privacyUrl"] == "https://bot.example.com/privacy"
    assert manifest["validDomains"] == ["*.botframework.com", "bot.example.com"]
    assert manifest["name"] == {"short": "Ask HR", "full": "Ask HR"}
    assert manifest["version"] == "1.2.3"
    assert "{{" not in json.dumps(manifest)


def test_render_without_host_uses_the_bot_id_for_the_app_and_leaves_valid_domains_alone() -> None:
    manifest = render_manifest(BOT_ID)
    assert manifest["id"] == BOT_ID == manifest["bots"][0]["botId"]
    assert manifest["validDomains"] == ["*.botframework.com"]
    assert manifest["developer"]["websiteUrl"].startswith("https://")
    assert "{{" not in json.dumps(manifest)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bot_id": "my-bot"}, "Microsoft App ID (--app-id) 'my-bot' is not a GUID"),
        ({"bot_id": BOT_ID, "app_id": BOT_ID[:-1]}, "Teams app id (--teams-app-id)"),
        ({"bot_id": BOT_ID, "host": "https://bot.example.com/api/messages"}, "is not a hostname"),
        ({"bot_id": BOT_ID, "name": "x" * 31}, "1 to 30 characters"),
        ({"bot_id": BOT_ID, "version": "1.0"}, "three numbers"),
    ],
)
def test_render_rejects_bad_input_naming_it(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        render_manifest(**kwargs)


def test_build_package_writes_the_same_bytes_for_the_same_input(tmp_path: Path) -> None:
    first = build_package(BOT_ID, tmp_path / "a.zip", host="bot.example.com")
    second = build_package(BOT_ID, tmp_path / "b.zip", host="bot.example.com")
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "b.zip"]  # no partial file left


async def test_teams_package_command_writes_a_zip_teams_can_upload(tmp_path: Path) -> None:
    # no Slack, OpenAI or Teams settings at all: packaging comes before configuring
    code, out, err = await run_cli(
        tmp_path, "teams-package", "--app-id", BOT_ID, "--out", "tmp/x.zip", env=base_env(tmp_path)
    )
    assert code == 0, err
    written = tmp_path / "tmp" / "x.zip"
    assert out.strip() == "tmp/x.zip" and written.is_file()
    with zipfile.ZipFile(written) as archive:
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]  # at the root
        text = archive.read("manifest.json").decode()
        assert archive.read("color.png") == (TEMPLATE / "color.png").read_bytes()
        assert archive.read("outline.png") == (TEMPLATE / "outline.png").read_bytes()
    assert "{{" not in text
    manifest = json.loads(text)
    assert manifest["id"] == BOT_ID and manifest["bots"][0]["botId"] == BOT_ID


async def test_teams_package_command_takes_a_separate_teams_app_id_and_host(tmp_path: Path) -> None:
    code, _, err = await run_cli(
        tmp_path,
        "teams-package",
        "--app-id",
        BOT_ID,
        "--teams-app-id",
        TEAMS_APP_ID,
        "--host",
        "bot.example.com",
        "--name",
        "Ask HR",
        "--version",
        "2.0.0",
        env=base_env(tmp_path),
    )
    assert code == 0, err
    with zipfile.ZipFile(tmp_path / "assistant-bridge-teams.zip") as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["id"] == TEAMS_APP_ID and manifest["bots"][0]["botId"] == BOT_ID
    assert "bot.example.com" in manifest["validDomains"] and manifest["version"] == "2.0.0"
    assert manifest["name"]["short"] == "Ask HR"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--app-id", "not-a-guid"],
            "teams-package: the Microsoft App ID (--app-id) 'not-a-guid' is not a GUID",
        ),
        (["--app-id", BOT_ID, "--teams-app-id", "123"], "teams-package: the Teams app id (--teams-app-id)"),
    ],
)
async def test_teams_package_command_refuses_a_bad_id_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, out, err = await run_cli(tmp_path, "teams-package", *args, env=base_env(tmp_path))
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert out == "" and not zips_in(tmp_path)
