"""The Teams app package: the manifest template filled in, zipped with its two icons.

Teams installs a bot from a zip holding exactly ``manifest.json``, ``color.png`` (192x192) and
``outline.png`` (32x32) at its root. The template and the icons live in ``manifests/teams`` of the
project. This module imports no Teams SDK and reads no settings, so a package can be built before
anything else is configured.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "manifests" / "teams"
PACKAGE_FILES = ("manifest.json", "color.png", "outline.png")
# Developer pages when no host is given: the manifest requires https URLs; Microsoft's own
# teams CLI uses the same stand-in.
DEFAULT_DEVELOPER_HOST = "www.example.com"
SHORT_NAME_MAX = 30

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_HOSTNAME = re.compile(
    r"(?=.{4,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]"
)
_VERSION = re.compile(r"(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)")  # the schema's pattern
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def template_dir() -> Path:
    """The folder holding the manifest template and icons; FileNotFoundError if it is incomplete."""
    missing = [name for name in PACKAGE_FILES if not (TEMPLATE_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the Teams app template is missing {', '.join(missing)} in {TEMPLATE_DIR}; "
            "build the package from a checkout of assistant-bridge (pip install -e .)"
        )
    return TEMPLATE_DIR


def render_manifest(
    bot_id: str,
    *,
    app_id: str | None = None,
    host: str | None = None,
    name: str | None = None,
    version: str = "1.0.0",
) -> dict[str, Any]:
    """The manifest with its placeholders filled in.

    ``bot_id`` is the bot's Microsoft App ID (the Entra application (client) id of the Azure Bot);
    it is also the Teams app id unless ``app_id`` is given. ``host`` (a bare hostname) becomes the
    developer pages and joins ``validDomains``. Raises ValueError, naming the bad value, for an id
    that is not a GUID, a host that is not a hostname, a name over 30 characters or a version that
    is not ``major.minor.patch``.
    """
    bot_id = _guid(bot_id, "the Microsoft App ID (--app-id)")
    app_id = _guid(app_id, "the Teams app id (--teams-app-id)") if app_id is not None else bot_id
    if host is not None:
        host = host.strip().lower()
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(
                f"host {host!r} is not a hostname: give the bare public name the bot is served on, "
                "like bot.example.com (no https://, port or path)"
            )
    if not _VERSION.fullmatch(version):
        raise ValueError(f"version {version!r} must be three numbers, like 1.0.0")
    if name is not None:
        name = name.strip()
        if not 0 < len(name) <= SHORT_NAME_MAX:
            raise ValueError(f"name {name!r} must be 1 to {SHORT_NAME_MAX} characters (Teams' limit)")

    path = template_dir() / "manifest.json"
    values = {"TEAMS_APP_ID": app_id, "BOT_ID": bot_id, "HOST": host or DEFAULT_DEVELOPER_HOST}
    try:
        manifest: dict[str, Any] = _fill(json.loads(path.read_text(encoding="utf-8")), values)
    except KeyError as exc:
        raise ValueError(f"{path}: unknown placeholder {{{{{exc.args[0]}}}}}") from None
    manifest["version"] = version
    if name is not None:
        manifest["name"] = {"short": name, "full": name}
    if host is not None and host not in manifest["validDomains"]:
        manifest["validDomains"].append(host)
    return manifest


def build_package(
    bot_id: str,
    out: Path,
    *,
    app_id: str | None = None,
    host: str | None = None,
    name: str | None = None,
    version: str = "1.0.0",
) -> Path:
    """Write the app package to ``out`` (parent folders are created) and return ``out``.

    The zip holds exactly ``manifest.json``, ``color.png`` and ``outline.png`` at its root, with
    fixed timestamps so the same inputs give the same bytes. Raises what :func:`render_manifest`
    raises, before anything is written, and OSError if ``out`` cannot be written.
    """
    manifest = render_manifest(bot_id, app_id=app_id, host=host, name=name, version=version)
    source = template_dir()
    contents = {
        "manifest.json": (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode(),
        "color.png": (source / "color.png").read_bytes(),
        "outline.png": (source / "outline.png").read_bytes(),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for filename in PACKAGE_FILES:
                entry = zipfile.ZipInfo(filename, date_time=(1980, 1, 1, 0, 0, 0))
                entry.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(entry, contents[filename])
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _guid(value: str, what: str) -> str:
    value = value.strip()
    if not _GUID.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a GUID: use the id as Azure shows it, "
            "like 00000000-0000-0000-0000-000000000000"
        )
    return value


def _fill(value: Any, values: dict[str, str]) -> Any:
    """``value`` with every ``{{NAME}}`` in its strings replaced; KeyError for an unknown NAME."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda match: values[match.group(1)], value)
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    return value
