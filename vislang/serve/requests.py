"""Reading a request: its body (bounded), its fields from a form or JSON, and its image, decoded off the loop.

An image is the multipart field ``image`` (a file) or the JSON member ``image_base64``; other fields are form
fields or JSON members of the same names. Nothing here fetches a URL.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from vislang.errors import ImageError
from vislang.serve.errors import ApiError

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


@dataclass
class Fields:
    """The fields of one request.

    Attributes:
        values: Field name -> value (strings from a form, JSON values from a JSON body).
        image: The image file's bytes, or None.
        max_text_chars: Longest text accepted.
    """

    values: dict[str, Any]
    image: bytes | None
    max_text_chars: int

    def text(self, name: str, *, required: bool = True, allow_empty: bool = False) -> str | None:
        """A text field, stripped: 422 when missing (``required``), empty (unless ``allow_empty``) or too long."""
        value = self.values.get(name)
        if value is None:
            if required:
                raise ApiError(422, f"field '{name}' is missing", "invalid_field")
            return None
        if not isinstance(value, str):
            raise ApiError(422, f"field '{name}' must be a string", "invalid_field")
        value = value.strip()
        if not value and not allow_empty:
            raise ApiError(422, f"field '{name}' is empty", "invalid_field")
        if len(value) > self.max_text_chars:
            raise ApiError(422, f"field '{name}' is too long ({len(value):,} characters; at most "
                                f"{self.max_text_chars:,})", "invalid_field")
        return value

    def prompt(self, name: str = "prompt") -> str:
        """A prompt, stripped: 422 when missing, not text or too long; an empty one is left to the model to refuse
        (with its own message)."""
        value = self.values.get(name)
        if value is None:
            raise ApiError(422, f"field '{name}' is missing", "invalid_field")
        if not isinstance(value, str):
            raise ApiError(422, f"{name} must be text, got {type(value).__name__}", "invalid_field")
        if len(value.strip()) > self.max_text_chars:
            raise ApiError(422, f"field '{name}' is too long ({len(value.strip()):,} characters; at most "
                                f"{self.max_text_chars:,})", "invalid_field")
        return value.strip()

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        """One of ``choices`` (``default`` when absent or empty); 422 otherwise."""
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ApiError(422, f"field '{name}' must be one of {', '.join(choices)}, got {value!r}", "invalid_field")
        return value.strip().lower()

    def number(self, name: str, default: float, lo: float, hi: float, *, integer: bool = True) -> Any:
        """A number field in ``[lo, hi]`` (``default`` when absent); 422 otherwise."""
        value = self.values.get(name)
        if value is None or value == "":
            return default
        kind = "a whole number" if integer else "a number"
        try:
            if isinstance(value, bool):
                raise ValueError
            number = int(value) if integer and not isinstance(value, float) else float(value)
            if integer and number != int(number):
                raise ValueError
        except (TypeError, ValueError):
            raise ApiError(422, f"field '{name}' must be {kind}, got {value!r}", "invalid_field") from None
        if not lo <= number <= hi:
            raise ApiError(422, f"field '{name}' must be between {lo:g} and {hi:g}, got {number:g}", "invalid_field")
        return int(number) if integer else float(number)

    def flag(self, name: str) -> bool:
        """A boolean field (``true``/``false``, ``1``/``0``, ``on``); false when absent."""
        value = self.values.get(name)
        if value is None or isinstance(value, bool):
            return bool(value)
        if str(value).strip().lower() in TRUE:
            return True
        if str(value).strip().lower() in FALSE:
            return False
        raise ApiError(422, f"field '{name}' must be true or false, got {value!r}", "invalid_field")

    def require_image(self) -> bytes:
        if self.image is None:
            raise ApiError(422, "no image: send the multipart field 'image' (a file) or the JSON member "
                                "'image_base64'", "invalid_field")
        return self.image


async def read_fields(request: Any, max_body_bytes: int, max_text_chars: int) -> Fields:
    """The request's fields, its body read up to ``max_body_bytes``.

    Raises:
        ApiError: 413 (body too large), 415 (content type), 400 (malformed JSON, form or base64).
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and ctype not in FORM_TYPES:
        if not ctype and not await _read_body(request, max_body_bytes):
            return Fields({}, None, max_text_chars)  # no body at all: no fields
        raise ApiError(415, f"unsupported content type {ctype or '(none)'!r}: send multipart/form-data "
                            "(with the image as the field 'image') or application/json")
    await _read_body(request, max_body_bytes)
    if ctype == "application/json":
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the JSON body must be an object")
        image = body.pop("image_base64", None)
        return Fields(body, _b64(image) if image is not None else None, max_text_chars)
    try:
        form = await request.form(max_files=2, max_fields=32, max_part_size=max_body_bytes)
    except Exception as e:  # malformed multipart: Starlette raises its own parse errors
        raise ApiError(400, f"malformed form data ({e})") from None
    values: dict[str, Any] = {}
    image = None
    for name, value in form.multi_items():
        if hasattr(value, "read"):  # an uploaded file
            if name != "image":
                raise ApiError(422, f"unexpected file field '{name}' (the image goes in the field 'image')",
                               "invalid_field")
            image = await value.read()
        elif name == "image_base64":
            image = _b64(value)
        else:
            values[name] = value
    return Fields(values, image, max_text_chars)


async def _read_body(request: Any, limit: int) -> int:
    """Read the body into the request (Starlette keeps it for ``body()`` and ``form()``), refusing it as soon
    as it passes ``limit`` bytes — before reading it all when ``Content-Length`` says so. Returns its size."""
    if hasattr(request, "_body"):
        return len(request._body)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {int(declared):,} bytes is over the limit of {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    request._body = b"".join(chunks)  # what Request.body() caches; form() then parses it
    return size


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ApiError(400, "'image_base64' must be a base64 string")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "'image_base64' is not valid base64") from None


def decode_image(data: bytes, min_side: int) -> Any:
    """An uploaded image as an RGB PIL image, decoded by vislang's loader (reduced to ``min_side``), with its
    messages: not an image, truncated, a decompression bomb. Blocking: call it on a thread.

    Raises:
        ApiError: 422 ``invalid_image`` with the loader's reason.
    """
    from vislang.data.images import load_image

    if not data:
        raise ApiError(422, "image: the file is empty", "invalid_image")
    with tempfile.TemporaryDirectory(prefix="vislang-upload-") as tmp:
        path = os.path.join(tmp, "upload")  # no suffix: decoded by Pillow only (no SVG rasterising)
        with open(path, "wb") as f:
            f.write(data)
        try:
            return load_image(path, min_side=min_side)
        except ImageError as e:
            raise ApiError(422, f"image: {e.reason}", "invalid_image") from None
