"""Files users send with a message: what kind each is, where it goes, and the limits.

Adapters describe each attached file as a :class:`FileSource` (they alone know how to download it
with the platform's token, from the platform's own hosts). The core checks each against the limits
and the assistant's tools, reads it, and hands the backend :class:`FilePart` objects routed by type:

- images go to the model as vision input;
- data and code files (csv, xlsx, json, py, txt …) to the code interpreter, when the assistant has it;
- documents (pdf, docx, md, html …) to file search (a vector store per conversation, created on
  first use and reused) when the assistant has it, else PDFs as file input, which models read
  directly.

A file that cannot be used is never dropped silently: the user is told its name and the reason,
and the rest of the message is still answered.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath
from typing import Protocol


class FileKind(Enum):
    IMAGE = "image"
    DATA = "data"  # data and code: for the code interpreter
    DOCUMENT = "document"


class FileRoute(Enum):
    """Where a backend puts a file."""

    VISION = "vision"  # an input image of the user's message
    CODE_INTERPRETER = "code_interpreter"  # a file in the code interpreter's sandbox
    FILE_SEARCH = "file_search"  # the conversation's vector store
    FILE_INPUT = "file_input"  # an input file of the user's message (PDFs)


_IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
_DATA = {
    ".csv", ".tsv", ".xlsx", ".xls", ".json", ".jsonl", ".py", ".txt", ".xml", ".yaml", ".yml",
    ".ipynb", ".sql", ".log", ".js", ".ts", ".java", ".c", ".cpp", ".h", ".rb", ".go", ".rs",
    ".sh", ".r", ".parquet", ".zip",
}  # fmt: skip
_DOCUMENTS = {".pdf", ".docx", ".doc", ".pptx", ".md", ".html", ".htm", ".rtf", ".tex", ".odt"}
_BY_MIME = {"image/png": FileKind.IMAGE, "image/jpeg": FileKind.IMAGE, "image/gif": FileKind.IMAGE,
            "image/webp": FileKind.IMAGE, "text/csv": FileKind.DATA, "text/plain": FileKind.DATA,
            "application/json": FileKind.DATA, "application/pdf": FileKind.DOCUMENT}  # fmt: skip


def kind_of(name: str, mime_type: str = "") -> FileKind | None:
    """What kind of file this is, by extension, else by MIME type; None when unsupported."""
    suffix = PurePosixPath(name.lower()).suffix
    if suffix in _IMAGES:
        return FileKind.IMAGE
    if suffix in _DATA:
        return FileKind.DATA
    if suffix in _DOCUMENTS:
        return FileKind.DOCUMENT
    return None if suffix else _BY_MIME.get(mime_type.split(";")[0].strip().lower())


def route_for(kind: FileKind, name: str, tools: set[str]) -> FileRoute | None:
    """Where a file of ``kind`` goes for an assistant with these hosted ``tools``; None when the
    assistant has no way to read it."""
    if kind is FileKind.IMAGE:
        return FileRoute.VISION
    if kind is FileKind.DATA:
        return FileRoute.CODE_INTERPRETER if "code_interpreter" in tools else None
    if "file_search" in tools:
        return FileRoute.FILE_SEARCH
    return FileRoute.FILE_INPUT if name.lower().endswith(".pdf") else None


@dataclass(frozen=True)
class FileLimits:
    max_file_bytes: int = 20 * 1024 * 1024
    max_message_bytes: int = 50 * 1024 * 1024
    max_files: int = 10


class FileRefused(Exception):
    """A file the bot cannot use; ``reason`` is shown to the user after the file's name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FileTooLarge(FileRefused):
    """The file grew past the limit while it was read (the core words the reason)."""

    def __init__(self) -> None:
        super().__init__("too large")


class FileSource(Protocol):
    """A file attached to a message, not yet downloaded (adapters implement this).

    ``size`` is what the platform declared, if anything. ``read`` downloads at most ``limit``
    bytes and raises :class:`FileRefused` (too large, not allowed, download failed, a login page
    instead of the file …) with a reason the user understands.
    """

    name: str
    mime_type: str
    size: int | None

    async def read(self, limit: int) -> bytes: ...


@dataclass(frozen=True)
class FilePart:
    """A file the user sent, read and checked, and where the backend must put it."""

    name: str
    mime_type: str
    data: bytes
    route: FileRoute

    @property
    def upload_mime_type(self) -> str:
        """The type to upload it with: as the platform said, else guessed from its name."""
        return self.mime_type or mimetypes.guess_type(self.name)[0] or "application/octet-stream"
