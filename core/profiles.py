"""Assistant profiles: model, instructions and tools, from the project's TOML file.

The file (``assistants.toml``) looks like::

    default = "general"

    [assistants.general]
    description = "Everyday questions"
    model = "gpt-4.1-mini"
    instructions = "You are a helpful assistant."
    max_output_tokens = 2000
    temperature = 0.3
    tools = [
      { type = "code_interpreter" },
      { type = "file_search", vector_store_ids = ["vs_123"] },
      { type = "function", function = "mypkg.tools:lookup_order" },
    ]

A function tool's JSON schema is ``parameters`` when given, otherwise derived from the callable's
signature; its description defaults to the callable's docstring. Any mistake stops start-up with a
:class:`core.errors.ConfigError` naming the file, the key and the reason.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError
from core.tools import FunctionTool, import_callable, schema_from_signature


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeInterpreterSpec(_Strict):
    type: Literal["code_interpreter"]


class FileSearchSpec(_Strict):
    type: Literal["file_search"]
    vector_store_ids: list[str] = Field(min_length=1)
    max_num_results: int | None = Field(default=None, ge=1, le=50)


class WebSearchSpec(_Strict):
    type: Literal["web_search"]


class FunctionSpec(_Strict):
    type: Literal["function"]
    function: str
    name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool = False
    timeout: float | None = Field(default=None, gt=0)


ToolSpec = Annotated[
    CodeInterpreterSpec | FileSearchSpec | WebSearchSpec | FunctionSpec, Field(discriminator="type")
]


class _TruncationSpec(_Strict):
    type: Literal["auto", "last_messages"]
    last_messages: int | None = Field(default=None, ge=1)


class _ProfileSpec(_Strict):
    description: str = ""
    backend: Literal["responses", "assistants"] = "responses"
    model: str | None = Field(default=None, min_length=1)
    instructions: str = ""
    tools: list[ToolSpec] = Field(default_factory=list)
    max_output_tokens: int | None = Field(default=None, ge=16)
    temperature: float | None = Field(default=None, ge=0, le=2)
    # Assistants v2 only
    assistant_id: str | None = Field(default=None, min_length=1)
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    stream: bool = True
    max_prompt_tokens: int | None = Field(default=None, ge=256)
    max_completion_tokens: int | None = Field(default=None, ge=16)
    truncation_strategy: _TruncationSpec | None = None
    additional_instructions: str | None = None
    tool_choice: Literal["auto", "none", "required"] | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _backend_fields(self) -> _ProfileSpec:
        if self.backend == "responses":
            if self.model is None:
                raise ValueError("model is required for the responses backend")
            used = [f for f in _ASSISTANTS_ONLY if getattr(self, f) not in (None, True)]
            if used:
                raise ValueError(f'{", ".join(used)} only apply to backend = "assistants"')
        elif self.assistant_id is None:
            raise ValueError('assistant_id is required for backend = "assistants"')
        if self.truncation_strategy and (self.truncation_strategy.type == "last_messages") != (
            self.truncation_strategy.last_messages is not None
        ):
            raise ValueError('truncation_strategy: last_messages N goes with type = "last_messages" only')
        return self


_RUN_CONTROLS = {
    "max_prompt_tokens",
    "max_completion_tokens",
    "truncation_strategy",
    "additional_instructions",
    "tool_choice",
    "parallel_tool_calls",
}
_ASSISTANTS_ONLY = ("assistant_id", "base_url", "api_key_env", "stream", *sorted(_RUN_CONTROLS))


class _AdminsSpec(_Strict):
    slack: list[str] = Field(default_factory=list)
    teams: list[str] = Field(default_factory=list)
    slack_workspace_admins: bool = False


class _AccessSpec(_Strict):
    dms: bool = True
    channels: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)
    guests: bool = False


class _LimitsSpec(_Strict):
    channel_daily_tokens: int = Field(default=0, ge=0)
    user_daily_tokens: int = Field(default=0, ge=0)


class _FileSpec(_Strict):
    default: str
    assistants: dict[str, _ProfileSpec] = Field(min_length=1)
    admins: _AdminsSpec = Field(default_factory=_AdminsSpec)
    access: _AccessSpec = Field(default_factory=_AccessSpec)
    limits: _LimitsSpec = Field(default_factory=_LimitsSpec)


@dataclass(frozen=True)
class AssistantProfile:
    """One assistant: what the backend is told on every turn."""

    name: str
    model: str | None
    instructions: str = ""
    description: str = ""
    backend: str = "responses"
    hosted_tools: tuple[dict[str, Any], ...] = ()
    functions: Mapping[str, FunctionTool] = field(default_factory=dict)
    max_output_tokens: int | None = None
    temperature: float | None = None
    assistants: AssistantsSettings | None = None

    def hosted_tools_for_assistants(self) -> list[dict[str, Any]]:
        """Assistants v2 tool entries (type only; vector stores go on the thread)."""
        return [
            {"type": t["type"]} for t in self.hosted_tools if t["type"] in ("code_interpreter", "file_search")
        ]

    def has_tool(self, tool_type: str) -> bool:
        return any(tool["type"] == tool_type for tool in self.hosted_tools)

    @property
    def file_tools(self) -> set[str]:
        """The hosted tools that can take users' files. An assistants profile that declares none
        leaves tools to the assistant on its server, so both are assumed there."""
        declared = {tool["type"] for tool in self.hosted_tools} & {"code_interpreter", "file_search"}
        if self.backend == "assistants" and not self.hosted_tools:
            return {"code_interpreter", "file_search"}
        return declared


@dataclass(frozen=True)
class AssistantsSettings:
    """A profile's Assistants v2 settings: which assistant, on which server, with which run controls.

    ``run_controls`` go to every ``runs.create`` as they are (max_prompt_tokens,
    max_completion_tokens, truncation_strategy, additional_instructions, tool_choice,
    parallel_tool_calls).
    """

    assistant_id: str
    base_url: str | None = None
    api_key_env: str | None = None
    stream: bool = True
    run_controls: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """Who administers the bot, where it answers and what it may spend (``[admins]``,
    ``[access]``, ``[limits]`` in the profiles file). Empty allowlists allow everyone; a limit of
    0 is no limit. Admins can change the per-channel part with commands."""

    slack_admins: frozenset[str] = frozenset()
    teams_admins: frozenset[str] = frozenset()
    slack_workspace_admins: bool = False
    dms: bool = True
    channels: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    guests: bool = False
    channel_daily_tokens: int = 0
    user_daily_tokens: int = 0

    def is_admin(self, platform: str, user_id: str, roles: frozenset[str]) -> bool:
        listed = self.slack_admins if platform == "slack" else self.teams_admins
        return user_id in listed or (
            platform == "slack" and self.slack_workspace_admins and "workspace_admin" in roles
        )


@dataclass(frozen=True)
class ProfileSet:
    """All profiles from the file, which one answers where nothing else is chosen, and the policy."""

    default_name: str
    profiles: Mapping[str, AssistantProfile]
    source: str = ""
    policy: Policy = field(default_factory=Policy)

    @property
    def default(self) -> AssistantProfile:
        return self.profiles[self.default_name]

    def get(self, name: str) -> AssistantProfile | None:
        return self.profiles.get(name)

    @property
    def needs_default_client(self) -> bool:
        """Whether any profile uses the OpenAI/Azure settings rather than a server of its own."""
        return any(p.assistants is None or p.assistants.base_url is None for p in self.profiles.values())


def load_profiles(path: str | Path, *, tool_timeout: float = 30.0) -> ProfileSet:
    """Read and validate the profiles file. Raises ConfigError (file, key, reason)."""
    source = str(path)
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found (set --config or ASSISTANT_BRIDGE_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    return parse_profiles(raw, source=source, tool_timeout=tool_timeout)


def parse_profiles(
    raw: dict[str, Any], *, source: str = "<config>", tool_timeout: float = 30.0
) -> ProfileSet:
    try:
        spec = _FileSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part))
        raise ConfigError(source, key or "(top level)", first["msg"].removeprefix("Value error, ")) from None
    if spec.default not in spec.assistants:
        raise ConfigError(source, "default", f"names {spec.default!r}, which is not one of [assistants.*]")
    profiles = {
        name: _build_profile(name, profile, source, tool_timeout) for name, profile in spec.assistants.items()
    }
    policy = Policy(
        slack_admins=frozenset(spec.admins.slack),
        teams_admins=frozenset(spec.admins.teams),
        slack_workspace_admins=spec.admins.slack_workspace_admins,
        dms=spec.access.dms,
        channels=frozenset(spec.access.channels),
        users=frozenset(spec.access.users),
        guests=spec.access.guests,
        channel_daily_tokens=spec.limits.channel_daily_tokens,
        user_daily_tokens=spec.limits.user_daily_tokens,
    )
    return ProfileSet(default_name=spec.default, profiles=profiles, source=source, policy=policy)


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and part in {"code_interpreter", "file_search", "web_search", "function"}


def _build_profile(name: str, spec: _ProfileSpec, source: str, tool_timeout: float) -> AssistantProfile:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", name):
        raise ConfigError(source, f"assistants.{name}", "names use a-z, 0-9, '-' and '_' (at most 40)")
    hosted: list[dict[str, Any]] = []
    functions: dict[str, FunctionTool] = {}
    for index, tool in enumerate(spec.tools):
        key = f"assistants.{name}.tools.{index}"
        if isinstance(tool, FunctionSpec):
            function_tool = _build_function(tool, key, source, tool_timeout)
            if function_tool.name in functions:
                raise ConfigError(source, key, f"function name {function_tool.name!r} is used twice")
            functions[function_tool.name] = function_tool
        else:
            hosted.append(tool.model_dump(exclude_none=True))
    assistants = None
    if spec.backend == "assistants":
        assert spec.assistant_id is not None
        controls = spec.model_dump(include=_RUN_CONTROLS, exclude_none=True)
        assistants = AssistantsSettings(
            assistant_id=spec.assistant_id,
            base_url=spec.base_url,
            api_key_env=spec.api_key_env,
            stream=spec.stream,
            run_controls=controls,
        )
    return AssistantProfile(
        name=name,
        assistants=assistants,
        model=spec.model,
        instructions=spec.instructions,
        description=spec.description,
        backend=spec.backend,
        hosted_tools=tuple(hosted),
        functions=functions,
        max_output_tokens=spec.max_output_tokens,
        temperature=spec.temperature,
    )


def _build_function(spec: FunctionSpec, key: str, source: str, tool_timeout: float) -> FunctionTool:
    try:
        function = import_callable(spec.function)
    except ValueError as exc:
        raise ConfigError(source, f"{key}.function", str(exc)) from None
    if spec.parameters is not None:
        parameters = spec.parameters
    else:
        try:
            parameters = schema_from_signature(function)
        except Exception as exc:
            raise ConfigError(
                source, f"{key}.parameters", f"cannot derive a schema from the signature ({exc}); declare it"
            ) from None
    name = str(spec.name or getattr(function, "__name__", ""))
    if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
        raise ConfigError(source, f"{key}.name", f"{name!r} is not a valid function name; set name")
    return FunctionTool(
        name=name,
        description=spec.description or inspect.getdoc(function) or "",
        parameters=parameters,
        function=function,
        timeout=spec.timeout or tool_timeout,
        strict=spec.strict,
    )
