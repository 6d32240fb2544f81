"""How OpenAI-protocol errors become :class:`core.events.Failure` values (shared by both backends)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai

from core.errors import BackendUnreachable
from core.events import Failure, FailureKind

_CODE_KINDS = {
    "rate_limit_exceeded": FailureKind.RATE_LIMITED,
    "context_length_exceeded": FailureKind.CONTEXT_TOO_LONG,
    "string_above_max_length": FailureKind.CONTEXT_TOO_LONG,
    "content_filter": FailureKind.CONTENT_FILTERED,
    "content_policy_violation": FailureKind.CONTENT_FILTERED,
    "invalid_api_key": FailureKind.MISCONFIGURED,
    "model_not_found": FailureKind.MISCONFIGURED,
}


def failure_from_code(code: str | None, message: str | None) -> Failure:
    """A failure for an error ``code`` carried in a stream (``response.failed``, ``error``)."""
    return Failure(_CODE_KINDS.get(code or "", FailureKind.FAILED), f"code={code} message={message}")


def failure_from_exception(exc: Exception) -> Failure:
    """A failure for an exception the openai client raised."""
    if isinstance(exc, openai.RateLimitError):
        return Failure(FailureKind.RATE_LIMITED, _describe(exc), retry_after=_retry_after(exc))
    if isinstance(exc, openai.APITimeoutError):
        return Failure(FailureKind.TIMEOUT, _describe(exc))
    if isinstance(exc, openai.APIConnectionError):
        return Failure(FailureKind.UNAVAILABLE, _describe(exc))
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return Failure(FailureKind.MISCONFIGURED, _describe(exc))
    if isinstance(exc, openai.APIStatusError):
        code = getattr(exc, "code", None)
        if code in _CODE_KINDS:
            return Failure(_CODE_KINDS[code], _describe(exc))
        if isinstance(exc, openai.InternalServerError):
            return Failure(FailureKind.UNAVAILABLE, _describe(exc))
        if isinstance(exc, openai.NotFoundError):
            return Failure(FailureKind.MISCONFIGURED, _describe(exc))
        if "maximum context length" in str(exc).lower():
            return Failure(FailureKind.CONTEXT_TOO_LONG, _describe(exc))
    return Failure(FailureKind.FAILED, _describe(exc))


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    request_id = getattr(exc, "request_id", None)
    return f"{type(exc).__name__} status={status} request_id={request_id} {exc}"


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            return float(value) / divisor
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if header == "retry-after" else None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    return None


@asynccontextmanager
async def reachability(not_found: str) -> AsyncIterator[None]:
    """Turn the errors of a ``check()`` call into :class:`BackendUnreachable` in plain words;
    ``not_found`` says what a 404 means (e.g. "model 'x' not found")."""
    try:
        yield
    except openai.AuthenticationError as exc:
        raise BackendUnreachable(f"the API key was refused ({exc.status_code})") from exc
    except openai.NotFoundError as exc:
        raise BackendUnreachable(not_found) from exc
    except openai.APIConnectionError as exc:
        raise BackendUnreachable(f"cannot connect: {exc}") from exc
    except openai.APIStatusError as exc:
        raise BackendUnreachable(f"the service answered {exc.status_code}: {exc.message}") from exc
