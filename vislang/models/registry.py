"""The model registry: ``create_model("caption_lstm_tiny")``, ``list_models("*tiny*")``.

A builder is a function returning an ``nn.Module``; keyword arguments override its config defaults.
Builders never download anything: weights come from explicit local paths.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from vislang.errors import VislangError

Builder = Callable[..., nn.Module]
_MODELS: dict[str, Builder] = {}


def register_model(name: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator registering a model builder under ``name`` (default: the function's name)."""

    def deco(fn: Builder) -> Builder:
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is registered twice")
        _MODELS[key] = fn
        return fn

    return deco


def _ensure_builtin() -> None:
    import vislang.models  # noqa: F401  (importing the package registers the built-in models)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern."""
    _ensure_builtin()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def describe_model(name: str) -> str:
    """The first paragraph of a registered builder's docstring, on one line."""
    _ensure_builtin()
    doc = (_MODELS[name].__doc__ or "").strip()
    return " ".join(line.strip() for line in doc.split("\n\n")[0].splitlines())


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; ``kwargs`` override the builder's config defaults."""
    _ensure_builtin()
    if name not in _MODELS:
        raise VislangError(f"unknown model {name!r}; known: {', '.join(sorted(_MODELS))}")
    return _MODELS[name](**kwargs)
