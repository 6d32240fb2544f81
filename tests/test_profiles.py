"""Assistant profiles: a good file loads; a bad one names the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.profiles import load_profiles

GOOD = """
default = "general"

[assistants.general]
description = "Everyday"
model = "gpt-4.1-mini"
instructions = "Be kind."
max_output_tokens = 800
temperature = 0.2

[[assistants.general.tools]]
type = "code_interpreter"

[[assistants.general.tools]]
type = "file_search"
vector_store_ids = ["vs_1"]

[[assistants.general.tools]]
type = "function"
function = "tests.tools:get_weather"

[[assistants.general.tools]]
type = "function"
function = "tests.tools:broken_tool"
name = "lookup"
description = "Looks up."
parameters = { type = "object", properties = {} }
timeout = 3

[assistants.analyst]
model = "gpt-4.1"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "assistants.toml"
    path.write_text(text)
    return path


def test_good_file_loads(tmp_path: Path) -> None:
    profiles = load_profiles(write(tmp_path, GOOD))
    general = profiles.default
    assert general.name == "general" and profiles.get("analyst") is not None
    assert general.hosted_tools == (
        {"type": "code_interpreter"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
    )
    weather = general.functions["get_weather"]
    assert weather.parameters["properties"]["unit"] == {"default": "C", "enum": ["C", "F"], "type": "string"}
    assert weather.parameters["required"] == ["city"]
    lookup = general.functions["lookup"]
    assert lookup.timeout == 3 and lookup.description == "Looks up."


def test_shipped_example_config_is_valid() -> None:
    assert load_profiles(Path(__file__).parent.parent / "assistants.toml").default.model


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('default = "x"\n[assistants.general]\nmodel = "m"\n', "default", "not one of"),
        ('default = "g"\n[assistants.g]\ninstructions = "no model"\n', "assistants.g", "model is required"),
        (
            'default = "g"\n[assistants.g]\nmodel = "m"\nmax_prompt_tokens = 1000\n',
            "assistants.g",
            "only apply to backend",
        ),
        (
            'default = "g"\n[assistants.g]\nbackend = "assistants"\n',
            "assistants.g",
            "assistant_id is required",
        ),
        (
            'default = "g"\n[assistants.g]\nbackend = "assistants"\nassistant_id = "asst_1"\n'
            'truncation_strategy = { type = "auto", last_messages = 3 }\n',
            "assistants.g",
            "last_messages N",
        ),
        (
            'default = "g"\n[assistants.g]\nmodel = "m"\ntemperature = 5\n',
            "assistants.g.temperature",
            "less than or equal",
        ),
        (
            'default = "g"\n[assistants.g]\nmodel = "m"\ncolour = "red"\n',
            "assistants.g.colour",
            "Extra inputs",
        ),
        (
            'default = "g"\n[assistants.g]\nmodel = "m"\ntools = [{type = "teleport"}]\n',
            "assistants.g.tools.0",
            "tag",
        ),
        (
            'default = "g"\n[assistants.g]\nmodel = "m"\ntools = [{type = "file_search"}]\n',
            "assistants.g.tools.0.vector_store_ids",
            "Field required",
        ),
        (
            'default = "g"\n[assistants.g]\nmodel = "m"\ntools = [{type = "function", function = "nope.nothing:f"}]\n',
            "assistants.g.tools.0.function",
            "cannot import module",
        ),
        (
            'default = "g"\n[assistants.g]\nmodel = "m"\ntools = [{type = "function", function = "tests.tools"}]\n',
            "assistants.g.tools.0.function",
            "expected 'module:function'",
        ),
        (
            'default = "g"\n[assistants.g]\nmodel = "m"\ntools = [{type = "function", function = "tests.tools:get_weather"},'
            '{type = "function", function = "tests.tools:get_weather"}]\n',
            "assistants.g.tools.1",
            "used twice",
        ),
        ('default = "G"\n[assistants.G]\nmodel = "m"\n', "assistants.G", "names use"),
        ('default = "g"\n[assistants.g\nmodel = "m"\n', "", "not valid TOML"),
    ],
)
def test_bad_file_names_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_profiles(path)
    error = caught.value
    assert error.source == str(path) and error.key == key and reason in error.reason
    assert str(path) in str(error)


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ASSISTANT_BRIDGE_CONFIG"):
        load_profiles(tmp_path / "absent.toml")
