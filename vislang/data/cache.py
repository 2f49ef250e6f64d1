"""Where built datasets live: ``--root`` > ``$VISLANG_DATA`` > the user's cache directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "VISLANG_DATA"


def default_cache_dir() -> Path:
    """The platform's user cache directory for vislang data."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vislang" / "data"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the data root: an explicit ``root``, else ``$VISLANG_DATA``, else the cache directory."""
    if root:
        return Path(root).expanduser().resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return default_cache_dir()
