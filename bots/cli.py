"""The ``assistant-bridge`` command: ``serve``, ``check``, ``audit`` and ``teams-package``."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import sys
from pathlib import Path

# The openai SDK builds its response models on first use unless told otherwise: that took 0.6 s
# on the event loop in the first turn after start (every ack and stream waited). Build them at
# start instead. Before anything imports openai.
os.environ.setdefault("DEFER_PYDANTIC_BUILD", "false")

from pydantic import ValidationError

from core.errors import BackendUnreachable, ConfigError
from core.profiles import ProfileSet, load_profiles
from core.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="assistant-bridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the bot: Slack events and /healthz on one HTTP server")
    serve.add_argument("--port", type=int, help="HTTP port (default: $PORT or 3000)")
    serve.add_argument(
        "--config", help="assistant profiles file (default: $ASSISTANT_BRIDGE_CONFIG or assistants.toml)"
    )
    check = sub.add_parser("check", help="validate the configuration and reach each configured service")
    check.add_argument("--config", help="assistant profiles file")
    audit = sub.add_parser("audit", help="print every change admins made (who, when, where, before -> after)")
    audit.add_argument(
        "--store", help="the store file (default: $ASSISTANT_BRIDGE_STORE or assistant-bridge.sqlite)"
    )
    package = sub.add_parser(
        "teams-package", help="write the Teams app package (manifest and icons) to upload to Teams"
    )
    package.add_argument(
        "--app-id",
        required=True,
        help="the bot's Microsoft App ID (MicrosoftAppId: the Azure Bot's Entra application (client) id)",
    )
    package.add_argument("--teams-app-id", help="the Teams app's own id (default: the --app-id)")
    package.add_argument("--host", help="the bot's public hostname, e.g. bot.example.com (validDomains)")
    package.add_argument("--name", help="the name people see in Teams (at most 30 characters)")
    package.add_argument(
        "--version", default="1.0.0", help="app version; raise it when you upload a changed package"
    )
    package.add_argument(
        "--out", type=Path, default=Path("assistant-bridge-teams.zip"), help="zip file to write"
    )
    args = parser.parse_args(argv)
    if args.command == "teams-package":  # needs no settings: packaging comes before configuring
        return _teams_package(args)

    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            _say(f"setting {'.'.join(map(str, error['loc']))}: {error['msg']}")
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    if getattr(args, "config", None):
        settings.config_path = args.config
    if getattr(args, "port", None) is not None:
        settings.port = args.port
    if args.command == "audit":
        store = args.store or settings.store_path
        if store != ":memory:" and not Path(store).exists():
            _say(f"audit: no store at {store} (set ASSISTANT_BRIDGE_STORE or --store)")
            if args.store:  # a path given by hand that is not there is a mistake
                return 1
            print("no changes recorded")  # the bot has not run here yet
            return 0
        return asyncio.run(_audit(store))
    if args.command == "serve":
        return _serve(settings)
    return asyncio.run(_check(settings))


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def _teams_package(args: argparse.Namespace) -> int:
    from bots.teams.package import build_package

    try:
        path = build_package(
            args.app_id,
            args.out,
            app_id=args.teams_app_id,
            host=args.host,
            name=args.name,
            version=args.version,
        )
    except ValueError as exc:
        _say(f"teams-package: {exc}")
        return 2
    except OSError as exc:
        _say(f"teams-package: {exc}")
        return 1
    print(path)
    return 0


def _load(settings: Settings) -> ProfileSet | None:
    try:
        return load_profiles(settings.config_path, tool_timeout=settings.tool_timeout)
    except ConfigError as exc:
        _say(f"config error: {exc}")
        return None


def _report_missing(settings: Settings, profiles: ProfileSet | None) -> bool:
    missing = settings.missing_for_serve(needs_openai=profiles is None or profiles.needs_default_client)
    for item in missing:
        _say(f"{'conflicting' if item.conflict else 'missing'} {item.variable}: {item.where}")
    return bool(missing)


def _serve(settings: Settings) -> int:
    from bots.service import Service, serve_until_signalled

    profiles = _load(settings)
    missing = _report_missing(settings, profiles)
    if missing or profiles is None:
        _say("assistant-bridge cannot start; see above. Settings may also go in a .env file.")
        return 2
    try:
        service = Service.create(settings, profiles)
    except ConfigError as exc:
        _say(f"config error: {exc}")
        return 2
    asyncio.run(serve_until_signalled(service))
    return 0


async def _audit(store_path: str) -> int:
    """One line per change, oldest first: ``<UTC time>  <who>  <where>  <what>  <before> -> <after>``.
    Needs only the store: no Slack, Teams or OpenAI settings."""
    from core.channels import SqliteChannelBook

    book = SqliteChannelBook(store_path)
    try:
        entries = await book.audit_entries()
    finally:
        await book.close()
    if not entries:
        print("no changes recorded")
    for entry in entries:
        at = datetime.datetime.fromtimestamp(entry.at, datetime.UTC).isoformat(timespec="seconds")
        print(
            f"{at.replace('+00:00', 'Z')}  {entry.who}  {entry.where}  {entry.what}  "
            f"{entry.before} -> {entry.after}"
        )
    return 0


async def _check(settings: Settings) -> int:
    from slack_sdk.errors import SlackApiError

    from bots.service import build_backends
    from bots.slack.adapter import BOT_SCOPES, build_web_client

    profiles = _load(settings)
    problems = int(_report_missing(settings, profiles))
    if profiles is None:
        return 1
    print(
        f"config ok: {settings.config_path}: {', '.join(profiles.profiles)} (default {profiles.default_name})"
    )
    if settings.slack_bot_token is not None:
        client = build_web_client(settings)
        try:
            auth = await client.auth_test()
            print(f"slack ok: {auth.get('team')} as {auth.get('user')}")
            granted = auth.headers.get("x-oauth-scopes")  # Slack lists the token's scopes here
            missing = sorted(BOT_SCOPES - set(granted.split(","))) if granted is not None else []
            if missing:
                problems += 1
                _say(
                    f"slack: the app lacks the scopes {', '.join(missing)}: update it from "
                    "manifests/slack/ and reinstall it to the workspace"
                )
        except SlackApiError as exc:
            problems += 1
            _say(f"slack: the bot token was refused ({exc.response.get('error')})")
        except Exception as exc:
            problems += 1
            _say(f"slack: cannot reach {client.base_url}: {exc}")
    if settings.teams_app_id is not None:
        print(
            f"teams: /api/messages checks tokens for app {settings.teams_app_id} ({settings.teams_app_type})"
        )
    elif settings.teams_allow_anonymous:
        _say(
            "teams: /api/messages takes requests without a token (TEAMS_ALLOW_ANONYMOUS): local testing only"
        )
    has_openai = settings.openai_api_key is not None or settings.azure_openai_endpoint is not None
    if has_openai or not profiles.needs_default_client:
        try:
            backends = build_backends(settings)
        except ConfigError as exc:
            _say(f"config error: {exc}")
            return 1
        for profile in profiles.profiles.values():
            try:
                await backends[profile.backend].check(profile)
                print(f"backend ok: {profile.name} ({profile.backend}, model {profile.model})")
            except BackendUnreachable as exc:
                problems += 1
                _say(f"backend: profile {profile.name}: {exc}")
        for backend in backends.values():
            await backend.close()
    if problems:
        _say(f"{problems} problem(s) found")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
