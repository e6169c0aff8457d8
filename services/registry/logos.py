"""App logos: PNG, JPEG or WebP, recognised by their content, never by name or declared type.

SVG is refused outright (it can carry script). Size and dimensions are capped before the image
is decoded, so a decompression bomb is refused from its header alone.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from services.common.rpc_errors import InvalidArgument

MAX_BYTES = 1024 * 1024
MAX_SIDE = 2048
MIN_SIDE = 16
_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def check(data: bytes) -> str:
    """Returns the detected content type or raises ``InvalidArgument("logo", …)``."""
    if not data:
        raise InvalidArgument("logo", "the file is empty")
    if len(data) > MAX_BYTES:
        raise InvalidArgument("logo", f"the file is larger than {MAX_BYTES // 1024} KiB")
    head = data[:512].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml", b"<!doctype", b"<html")) or b"<svg" in head:
        raise InvalidArgument("logo", "SVG and other markup are not accepted; use PNG, JPEG "
                              "or WebP")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(_FORMATS)) as image:
                content_type = _FORMATS.get(image.format or "")
                width, height = image.size
                if content_type is None:
                    raise InvalidArgument("logo", "use a PNG, JPEG or WebP image")
                if width > MAX_SIDE or height > MAX_SIDE:
                    raise InvalidArgument("logo", f"the image is {width}×{height}; at most "
                                          f"{MAX_SIDE}×{MAX_SIDE} pixels are accepted")
                if width < MIN_SIDE or height < MIN_SIDE:
                    raise InvalidArgument("logo", f"the image is {width}×{height}; at least "
                                          f"{MIN_SIDE}×{MIN_SIDE} pixels are needed")
                image.load()
    except InvalidArgument:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidArgument("logo", "the file is not a PNG, JPEG or WebP image") from None
    except (OSError, SyntaxError, ValueError):
        raise InvalidArgument("logo", "the image is damaged or truncated") from None
    return content_type
