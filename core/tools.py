"""Function tools: Python callables an assistant profile lets the model call."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import create_model

log = logging.getLogger(__name__)

# Plain (non-async) tools run here, not in the default pool that the stores use: a tool that
# hangs keeps its thread after its timeout (threads cannot be cancelled), and must not stall
# every turn's store access with it.
TOOL_THREADS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="assistant-tool")


@dataclass(frozen=True)
class FunctionTool:
    """A callable the model may call by ``name`` with JSON arguments matching ``parameters``."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    timeout: float = 30.0
    strict: bool = False

    async def invoke(self, arguments: str) -> str:
        """Run the call and return the output the model sees.

        Never raises: bad JSON, an exception or a timeout becomes an error output, so the model
        can recover and the conversation never holds an unanswered call.
        """
        try:
            kwargs = json.loads(arguments or "{}")
            if not isinstance(kwargs, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            return error_output(f"invalid arguments for {self.name}: {exc}")
        try:
            if inspect.iscoroutinefunction(self.function):
                result = await asyncio.wait_for(self.function(**kwargs), self.timeout)
            else:
                call = functools.partial(self.function, **kwargs)
                running = asyncio.get_running_loop().run_in_executor(TOOL_THREADS, call)
                result = await asyncio.wait_for(running, self.timeout)
        except TimeoutError:
            log.warning("tool=%s outcome=timeout after=%.1fs", self.name, self.timeout)
            return error_output(f"{self.name} did not finish within {self.timeout:g} seconds")
        except Exception as exc:  # a tool's failure is the model's to handle, not ours
            log.warning("tool=%s outcome=error error=%r", self.name, exc)
            return error_output(f"{self.name} failed: {type(exc).__name__}: {exc}")
        return result if isinstance(result, str) else json.dumps(result, default=str)

    def as_assistants_tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
                "strict": self.strict,
            },
        }

    def as_responses_tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": self.strict,
        }


def error_output(message: str) -> str:
    return json.dumps({"error": message})


async def call_tool(tools: dict[str, FunctionTool], name: str, arguments: str) -> str:
    """Run ``name`` if the profile has it; an unknown name becomes an error output."""
    tool = tools.get(name)
    if tool is None:
        return error_output(f"unknown function {name!r}")
    return await tool.invoke(arguments)


def import_callable(path: str) -> Callable[..., Any]:
    """Resolve ``"package.module:function"``. Raises ValueError with a plain reason."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"module {module_name!r} has no {attr!r}")
    if not callable(target):
        raise ValueError(f"{path!r} is not callable")
    return target  # type: ignore[no-any-return]


def schema_from_signature(function: Callable[..., Any]) -> dict[str, Any]:
    """A JSON schema for the function's keyword parameters, from its type hints."""
    fields: dict[str, Any] = {}
    hints = get_type_hints(function)
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    model = create_model(f"{function.__name__}_args", **fields)
    schema: dict[str, Any] = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema
