"""The model registry: every model is a variant of a family, declared once.

A *family* is one config dataclass and one build function taking it. A *variant* is a registered name, its
config defaults and a one-line description::

    @register_family("dual_encoder", DualEncoderConfig)
    def build_dual_encoder(cfg: DualEncoderConfig) -> DualEncoder: ...

    register_model("dual_encoder_tiny", "dual_encoder", "A tiny dual encoder for tests.",
                   image_encoder="cnn_tiny", text_encoder="text_transformer_tiny", embed_dim=16)

    model = create_model("dual_encoder_tiny", embed_dim=32)
    cfg = model_config("dual_encoder_tiny", embed_dim=32)     # the DualEncoderConfig it is built from

Keyword arguments are checked against the family's config with :mod:`vislang.config`, as ``--set`` overrides
are: an unknown option or a value of the wrong type raises :class:`~vislang.config.ConfigError` naming the
model and the key, and lists (from JSON or YAML) become tuples where the field is a tuple. So
``create_model(name, **config_to_dict(model_config(name, **kw)))`` builds the same model as
``create_model(name, **kw)``: that is how a saved model folder rebuilds its model. Options of sub-models
(``encoder_kwargs``, ``image_encoder_kwargs``, ...) are dict fields, checked when the sub-model is created.
Builders never download anything: weights come from explicit local paths.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, is_dataclass
from typing import Any, TypeVar

from torch import nn

from vislang.config import config_from_dict, update_config
from vislang.errors import VislangError
from vislang.utils.registry import Registry

C = TypeVar("C")
Build = Callable[[Any], nn.Module]


@dataclass(frozen=True)
class ModelFamily:
    """Models built by one function from one config dataclass.

    Attributes:
        name: Family name (``"dual_encoder"``).
        config_cls: The config dataclass; every field has a default.
        build: ``build(cfg) -> nn.Module``.
        merge: Dict fields whose given keys update the variant's dict instead of replacing it (e.g. a tiny
            variant's ``fusion_kwargs`` keep their width when only ``depth`` is given).
    """

    name: str
    config_cls: type
    build: Build
    merge: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: a variant of ``family`` with the defaults ``config``, or (``family`` None) a plain
    builder ``builder(**kwargs)`` whose keyword arguments are passed unchecked (models defined outside
    vislang, e.g. in tests)."""

    name: str
    doc: str
    family: ModelFamily | None = None
    config: Any = None
    builder: Callable[..., nn.Module] | None = None


FAMILIES: Registry[ModelFamily] = Registry("model family", load="vislang.models")
MODELS: Registry[ModelEntry] = Registry("model", load="vislang.models")


def register_family(name: str, config_cls: type, *, merge: tuple[str, ...] = ()) -> Callable[[C], C]:
    """Decorator registering a family's build function ``build(cfg: config_cls) -> nn.Module``."""
    if not is_dataclass(config_cls):
        raise TypeError(f"model family {name!r}: {config_cls!r} is not a dataclass")

    def deco(build: C) -> C:
        FAMILIES.add(name, ModelFamily(name, config_cls, build, tuple(merge)))  # type: ignore[arg-type]
        return build

    return deco


def register_model(name: str, family: str | None = None, doc: str = "", /, **defaults: Any) -> Any:
    """Register the model ``name``: a variant of ``family`` whose config defaults are ``defaults``.

    Args:
        name: The model name (``"caption_lstm_tiny"``).
        family: A registered family. ``None`` makes this a decorator registering a plain builder
            ``fn(**kwargs) -> nn.Module`` instead (no typed config; its docstring describes it).
        doc: One line describing the variant (``vislang models`` prints it).
        **defaults: Config fields that differ from the family config's defaults.

    Raises:
        ConfigError: A default is not a field of the family's config, or has the wrong type.
        ValueError: ``name`` is registered already.
    """
    if family is None:
        def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
            first = (fn.__doc__ or "").strip().split("\n\n")[0]
            MODELS.add(name, ModelEntry(name, " ".join(first.split()), builder=fn))
            return fn

        return deco
    fam = FAMILIES.get(family)
    config = config_from_dict(fam.config_cls, defaults, source=f"model {name}")
    return MODELS.add(name, ModelEntry(name, doc, fam, config))


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Registered model names matching a glob pattern (and of ``family``, when given), sorted."""
    names = MODELS.names(pattern)
    return names if family is None else [n for n in names if model_family(n) == family]


def describe_model(name: str) -> str:
    """The one-line description of a registered model."""
    return MODELS.get(name).doc


def model_family(name: str) -> str | None:
    """The family of a registered model (``None`` for a plain builder)."""
    fam = MODELS.get(name).family
    return None if fam is None else fam.name


def model_config(name: str, **kwargs: Any) -> Any:
    """The config dataclass the registered model ``name`` is built from, given ``create_model`` kwargs.

    Raises:
        VislangError: Unknown model, or a plain builder (no typed config).
        ConfigError: An unknown option (with a "did you mean") or a value of the wrong type.
    """
    entry = MODELS.get(name)
    if entry.family is None:
        raise VislangError(f"model {name!r} is a plain builder without a typed config")
    base = copy.deepcopy(entry.config)
    given = {k: {**getattr(base, k), **v} if k in entry.family.merge and isinstance(v, Mapping) else v
             for k, v in kwargs.items()}
    return update_config(base, given, source=f"model {name}")


def family_config(name: str, family: str, what: str, /, **kwargs: Any) -> Any:
    """:func:`model_config` of ``name``, which must be a registered model of ``family`` (``what``: the family
    in words, as the error names it, e.g. ``"a dual encoder"``).

    Raises:
        VislangError: ``name`` is not of ``family``, or an option is invalid.
    """
    if model_family(name) != family:
        raise VislangError(f"{name!r} is not {what}; known: {', '.join(list_models(family=family))}")
    return model_config(name, **kwargs)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` override its config defaults (see the module docstring).

    Raises:
        VislangError: Unknown model or invalid options (:class:`~vislang.config.ConfigError` for unknown keys
            and wrong types).
    """
    entry = MODELS.get(name)
    if entry.family is None:
        return entry.builder(**kwargs)  # type: ignore[misc]
    return entry.family.build(model_config(name, **kwargs))
