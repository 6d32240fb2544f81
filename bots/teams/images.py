"""Fitting images within what Teams shows inline: at most 1024x1024 pixels and 1 MB, PNG, JPEG
or a static GIF. Larger images are scaled down and re-encoded (PNG, else JPEG)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

MAX_SIDE = 1024
MAX_BYTES = 1_048_576
_INLINE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif"}


class UnusableImage(ValueError):
    """The bytes are not an image Pillow can read."""


@dataclass(frozen=True)
class InlineImage:
    data: bytes
    mime_type: str

    @property
    def suffix(self) -> str:
        return {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif"}[self.mime_type]


def fit_for_teams(data: bytes) -> InlineImage:
    """The image as Teams can show it inline. CPU-bound: call it in a worker thread."""
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise UnusableImage(str(exc)) from exc
    fmt = image.format or ""
    animated = getattr(image, "is_animated", False)
    if fmt in _INLINE_FORMATS and not animated and max(image.size) <= MAX_SIDE and len(data) <= MAX_BYTES:
        return InlineImage(data, _INLINE_FORMATS[fmt])
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    png = _encode(image, "PNG", optimize=True)
    if len(png) <= MAX_BYTES:
        return InlineImage(png, "image/png")
    flat = _flatten(image)
    for quality in (90, 80, 70, 60, 50):
        jpeg = _encode(flat, "JPEG", quality=quality, optimize=True)
        if len(jpeg) <= MAX_BYTES:
            return InlineImage(jpeg, "image/jpeg")
    flat.thumbnail((MAX_SIDE // 2, MAX_SIDE // 2), Image.Resampling.LANCZOS)
    return InlineImage(_encode(flat, "JPEG", quality=60, optimize=True), "image/jpeg")


def _flatten(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: paint transparent areas white."""
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, "white")
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
