"""Which endpoint and credentials the backend client uses: OpenAI or Azure OpenAI."""

from __future__ import annotations

import importlib.util

import pytest

from core.backends.clients import build_openai_client
from core.errors import ConfigError
from core.settings import Settings


def test_openai_with_key_and_optional_base_url() -> None:
    client = build_openai_client(Settings(_env_file=None, openai_api_key="sk-1", openai_max_retries=5))
    assert str(client.base_url) == "https://api.openai.com/v1/" and client.api_key == "sk-1"
    assert client.max_retries == 5
    proxied = build_openai_client(
        Settings(_env_file=None, openai_api_key="sk-1", openai_base_url="http://proxy/v1")
    )
    assert str(proxied.base_url) == "http://proxy/v1/"


def test_azure_with_key_uses_the_v1_endpoint() -> None:
    settings = Settings(
        _env_file=None, azure_openai_endpoint="https://res.openai.azure.com/", azure_openai_api_key="az-key"
    )
    client = build_openai_client(settings)
    assert str(client.base_url) == "https://res.openai.azure.com/openai/v1/"
    assert client.api_key == "az-key"


def _has_azure_identity() -> bool:
    try:
        return importlib.util.find_spec("azure.identity") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(_has_azure_identity(), reason="azure-identity is installed here")
def test_azure_without_key_or_azure_identity_says_what_to_install() -> None:
    settings = Settings(_env_file=None, azure_openai_endpoint="https://res.openai.azure.com")
    with pytest.raises(ConfigError, match=r"assistant-bridge\[azure\]"):
        build_openai_client(settings)


def test_no_backend_credentials_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_openai_client(Settings(_env_file=None))
