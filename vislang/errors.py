"""Errors that vislang reports to users as a clear message rather than a traceback."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, stripped (its type's name when it has none): what a
    one-line error quotes of a library's exception, whose later lines may hold a C++ trace or a table."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class VislangError(Exception):
    """Base class for every error the CLI prints as ``error: <message>`` and exits 2."""


class DataError(VislangError):
    """Malformed dataset input: the message names the file, the line or entry, and the field."""

    def __init__(self, message: str, *, path: str | None = None, where: str | None = None,
                 field: str | None = None):
        parts = [p for p in (path, where, f"field '{field}'" if field else None) if p]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.path, self.where, self.field = path, where, field


class ImageError(VislangError):
    """An image file that cannot be decoded (missing, truncated, not an image, too large)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class MissingImagesError(DataError):
    """Several images of a dataset are missing or unreadable; found up front, reported together."""

    def __init__(self, dataset: str, bad: list[tuple[str, str]], total: int):
        shown = "\n".join(f"  {p}: {r}" for p, r in bad[:5])
        more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        super().__init__(
            f"{len(bad)} of {total} images of {dataset} are missing or unreadable:\n{shown}{more}\n"
            "Fix the paths, or pass --skip-bad to leave those samples out."
        )
        self.bad, self.total = bad, total


class ExternalToolError(VislangError):
    """A tool vislang needs to build data (npm, apt-get, dpkg-deb) is absent or failed."""
