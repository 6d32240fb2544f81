"""Function tools used by the test profiles (imported by "module:function" like a user's own)."""

from __future__ import annotations

import asyncio
from typing import Literal


def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, object]:
    """Current weather for a city."""
    return {"city": city, "temperature": 21, "unit": unit}


async def slow_tool(seconds: float) -> str:
    """Sleeps (to test the per-call timeout)."""
    await asyncio.sleep(seconds)
    return "finished"


def broken_tool() -> str:
    """Always raises."""
    raise RuntimeError("database is down")
