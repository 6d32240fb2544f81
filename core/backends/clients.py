"""Building the openai client from settings: OpenAI, or Azure OpenAI's v1 endpoint."""

from __future__ import annotations

import openai

from core.errors import ConfigError
from core.settings import Settings

AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"


def build_openai_client(settings: Settings) -> openai.AsyncOpenAI:
    """An ``AsyncOpenAI`` for OpenAI or Azure OpenAI.

    Azure uses the v1 endpoint (``<endpoint>/openai/v1/``, no api-version; ``model`` is the
    deployment name) with ``AZURE_OPENAI_API_KEY``, or without a key an Entra ID token from
    azure-identity's ``DefaultAzureCredential`` (``pip install 'assistant-bridge[azure]'``).
    """
    retries, timeout = settings.openai_max_retries, settings.openai_timeout
    if settings.azure_openai_endpoint:
        base_url = settings.azure_openai_endpoint.rstrip("/") + "/openai/v1/"
        if settings.azure_openai_api_key:
            return openai.AsyncOpenAI(
                base_url=base_url,
                api_key=settings.azure_openai_api_key.get_secret_value(),
                max_retries=retries,
                timeout=timeout,
            )
        try:
            from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider
        except ImportError:
            raise ConfigError(
                "environment",
                "AZURE_OPENAI_API_KEY",
                "not set, and azure-identity is not installed for an Entra ID token "
                "(pip install 'assistant-bridge[azure]')",
            ) from None
        provider = get_bearer_token_provider(DefaultAzureCredential(), AZURE_SCOPE)
        return openai.AsyncOpenAI(base_url=base_url, api_key=provider, max_retries=retries, timeout=timeout)
    if settings.openai_api_key is None:
        raise ConfigError("environment", "OPENAI_API_KEY", "not set")
    return openai.AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        max_retries=retries,
        timeout=timeout,
    )
