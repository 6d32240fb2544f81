"""Every setting, read from the environment (and an optional ``.env`` file) in this one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.files import FileLimits


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Typed settings. Construct with keyword arguments in tests, ``Settings()`` in the CLI."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # Backend: OpenAI, or Azure OpenAI (v1 endpoint) with a key or an Entra ID token.
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(None, validation_alias=_env("OPENAI_BASE_URL"))
    azure_openai_endpoint: str | None = Field(None, validation_alias=_env("AZURE_OPENAI_ENDPOINT"))
    azure_openai_api_key: SecretStr | None = Field(None, validation_alias=_env("AZURE_OPENAI_API_KEY"))
    openai_max_retries: int = Field(2, ge=0, le=10, validation_alias=_env("OPENAI_MAX_RETRIES"))
    openai_timeout: float = Field(120.0, gt=0, validation_alias=_env("OPENAI_TIMEOUT"))

    # Slack
    slack_bot_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(None, validation_alias=_env("SLACK_SIGNING_SECRET"))
    slack_app_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_APP_TOKEN"))
    slack_api_url: str | None = Field(None, validation_alias=_env("SLACK_API_URL"))

    # Microsoft Teams (an Azure Bot registration). The Bot Framework names are the conventional ones;
    # the Agents SDK's own CONNECTIONS__SERVICE_CONNECTION__SETTINGS__* names are read too.
    teams_app_id: str | None = Field(
        None,
        validation_alias=_env(
            "MicrosoftAppId", "MICROSOFT_APP_ID", "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID"
        ),
    )
    teams_app_password: SecretStr | None = Field(
        None,
        validation_alias=_env(
            "MicrosoftAppPassword",
            "MICROSOFT_APP_PASSWORD",
            "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTSECRET",
        ),
    )
    teams_tenant_id: str | None = Field(
        None,
        validation_alias=_env(
            "MicrosoftAppTenantId",
            "MICROSOFT_APP_TENANT_ID",
            "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__TENANTID",
        ),
    )
    teams_app_type: Literal["SingleTenant", "UserAssignedMSI"] = Field(
        "SingleTenant", validation_alias=_env("MicrosoftAppType", "MICROSOFT_APP_TYPE")
    )
    # Local testing only (e.g. the Microsoft 365 Agents Playground): accept requests without a token.
    teams_allow_anonymous: bool = Field(False, validation_alias=_env("TEAMS_ALLOW_ANONYMOUS"))

    # The bridge
    config_path: str = Field("assistants.toml", validation_alias=_env("ASSISTANT_BRIDGE_CONFIG"))
    store_path: str = Field("assistant-bridge.sqlite", validation_alias=_env("ASSISTANT_BRIDGE_STORE"))
    host: str = Field("0.0.0.0", validation_alias=_env("HOST"))
    port: int = Field(3000, ge=0, le=65535, validation_alias=_env("PORT"))
    shutdown_grace: float = Field(30.0, ge=0, validation_alias=_env("ASSISTANT_BRIDGE_SHUTDOWN_GRACE"))
    turn_timeout: float = Field(600.0, gt=0, validation_alias=_env("ASSISTANT_BRIDGE_TURN_TIMEOUT"))
    tool_timeout: float = Field(30.0, gt=0, validation_alias=_env("ASSISTANT_BRIDGE_TOOL_TIMEOUT"))
    max_tool_rounds: int = Field(8, ge=1, le=50, validation_alias=_env("ASSISTANT_BRIDGE_MAX_TOOL_ROUNDS"))
    max_pending_per_thread: int = Field(20, ge=1, validation_alias=_env("ASSISTANT_BRIDGE_MAX_PENDING"))
    max_concurrent_turns: int = Field(64, ge=1, validation_alias=_env("ASSISTANT_BRIDGE_MAX_CONCURRENT"))
    max_file_mb: float = Field(20, gt=0, validation_alias=_env("ASSISTANT_BRIDGE_MAX_FILE_MB"))
    max_message_files_mb: float = Field(50, gt=0, validation_alias=_env("ASSISTANT_BRIDGE_MAX_MESSAGE_MB"))
    dedupe_ttl: float = Field(3600.0, gt=0, validation_alias=_env("ASSISTANT_BRIDGE_DEDUPE_TTL"))
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL"))

    @property
    def file_limits(self) -> FileLimits:
        return FileLimits(
            max_file_bytes=int(self.max_file_mb * 1024 * 1024),
            max_message_bytes=int(self.max_message_files_mb * 1024 * 1024),
        )

    @property
    def slack_socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None

    @property
    def teams_enabled(self) -> bool:
        """Teams is served at /api/messages with an app id (tokens checked) or, for local testing
        without one, when anonymous requests are explicitly allowed."""
        return self.teams_app_id is not None or self.teams_allow_anonymous

    def missing_for_serve(self, needs_openai: bool = True) -> list[MissingSetting]:
        """Every setting ``serve`` needs that is not set, with where to get it. ``needs_openai``
        is False when every profile names its own server (assistants profiles with base_url)."""
        missing: list[MissingSetting] = []
        if needs_openai and self.openai_api_key is None and self.azure_openai_endpoint is None:
            missing.append(_MISSING["OPENAI_API_KEY"])
        if self.slack_bot_token is None and not self.teams_enabled:
            missing.append(_MISSING["SLACK_BOT_TOKEN"])
        if (self.slack_enabled or not self.teams_enabled) and (
            self.slack_app_token is None and self.slack_signing_secret is None
        ):
            missing.append(_MISSING["SLACK_SIGNING_SECRET"])
        if self.teams_app_id is not None:
            if self.teams_allow_anonymous:
                missing.append(_MISSING["TEAMS_ALLOW_ANONYMOUS"])
            if self.teams_app_type == "SingleTenant":
                if self.teams_app_password is None:
                    missing.append(_MISSING["MicrosoftAppPassword"])
                if self.teams_tenant_id is None:
                    missing.append(_MISSING["MicrosoftAppTenantId"])
        return missing


@dataclass(frozen=True)
class MissingSetting:
    variable: str
    where: str
    conflict: bool = False  # set, but must not be (with what it conflicts with in ``where``)


_MISSING = {
    m.variable: m
    for m in (
        MissingSetting(
            "OPENAI_API_KEY",
            "an API key from platform.openai.com/api-keys (or set AZURE_OPENAI_ENDPOINT and "
            "AZURE_OPENAI_API_KEY for Azure OpenAI)",
        ),
        MissingSetting(
            "SLACK_BOT_TOKEN",
            "the xoxb- token under OAuth & Permissions of your Slack app (api.slack.com/apps), "
            "after installing it to the workspace (or set MicrosoftAppId to serve Microsoft Teams only)",
        ),
        MissingSetting(
            "SLACK_SIGNING_SECRET",
            "Basic Information > App Credentials > Signing Secret of your Slack app; or set "
            "SLACK_APP_TOKEN (an xapp- token with connections:write) to use Socket Mode instead",
        ),
        MissingSetting(
            "MicrosoftAppPassword",
            "a client secret of the bot's Microsoft Entra app (Azure Bot > Configuration > Manage "
            "Password); or set MicrosoftAppType=UserAssignedMSI to use a managed identity",
        ),
        MissingSetting(
            "MicrosoftAppTenantId",
            "the Directory (tenant) id of the bot's Microsoft Entra app (a SingleTenant app needs it)",
        ),
        MissingSetting(
            "TEAMS_ALLOW_ANONYMOUS",
            "is set together with MicrosoftAppId; with an app id every Teams request's token is checked, "
            "so remove TEAMS_ALLOW_ANONYMOUS (it is for local testing without an app id)",
            conflict=True,
        ),
    )
}


def secret_from_environment(name: str) -> str | None:
    """A key a profile names by variable (``api_key_env``); read here so that the environment is
    read in this one module."""
    import os

    return os.environ.get(name)
