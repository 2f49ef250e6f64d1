"""Configs as nested dataclasses: built from dicts and YAML files, overridden from the command line.

Precedence is defaults < YAML < CLI::

    cfg = resolve_config(RunConfig, "run.yaml", ["train.optim.lr=3e-4", "train.epochs=5"])
    save_config(cfg, run_dir / "config.yaml")

Values are checked against the dataclass field types (``int``, ``float``, ``bool``, ``str``, ``Path``,
``tuple[...]``, ``list[...]``, ``dict[str, ...]``, ``Literal[...]``, ``X | None``, nested dataclasses and
``Any``), and every mistake raises :class:`ConfigError` naming the key (and the YAML line when there is one).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vislang.errors import VislangError
from vislang.utils.io import atomic_open

T = TypeVar("T")

_NONE_WORDS = ("none", "null", "~")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


class ConfigError(VislangError):
    """A config key that does not exist, a value of the wrong type, or an unreadable config file."""


@dataclasses.dataclass
class _Where:
    """Where values come from, for error messages: a file with line numbers, or one override."""

    source: str | None = None          # file path or "override 'a.b=1'"
    lines: dict[str, int] | None = None  # dotted key -> 1-based line in the source file

    def error(self, key: str, message: str) -> ConfigError:
        parts = [self.source] if self.source else []
        line = self._line(key)
        if line is not None:
            parts.append(f"line {line}")
        if key:
            parts.append(key)
        return ConfigError(": ".join([*parts, message]))

    def _line(self, key: str) -> int | None:
        if not self.lines:
            return None
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key.rpartition(".")[0]
        return None


# ----------------------------------------------------------------------------------------------- reading


def config_from_dict(cls: type[T], d: Mapping[str, Any], *, source: str | None = None) -> T:
    """Build the dataclass ``cls`` from a nested dict; missing keys take the field defaults.

    Args:
        cls: A dataclass type (fields may be dataclasses themselves).
        d: Values by field name; nested dataclass fields take nested dicts.
        source: Where ``d`` came from, for error messages (e.g. a file path).

    Raises:
        ConfigError: Unknown key, wrong type, or a required key missing; the message names the key.
    """
    return _build(cls, d, "", _Where(source))


def update_config(cfg: T, d: Mapping[str, Any], *, source: str | None = None) -> T:
    """A copy of the dataclass instance ``cfg`` with the keys of the nested dict ``d`` replaced.

    Nested dataclasses are updated key by key, so ``{"optim": {"lr": 1e-4}}`` keeps the other optim fields.
    """
    return _update(cfg, d, "", _Where(source))


def load_yaml_config(cls: type[T], path: str | os.PathLike) -> T:
    """Read a YAML file into the dataclass ``cls`` (keys it does not set keep their defaults).

    Raises:
        ConfigError: The file is missing or not valid YAML, or a key/value is wrong (with its line).
    """
    data, lines = _read_yaml(path)
    return _build(cls, data, "", _Where(str(path), lines))


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """A copy of ``cfg`` with ``key.path=value`` overrides applied in order.

    Values are parsed by the type of the field they set: ``optim.lr=3e-4`` gives a float,
    ``optim.betas=0.9,0.98`` (or ``[0.9, 0.98]``) a tuple, ``max_steps=none`` None, ``amp=off`` the string
    "off" for a ``str`` field. A path may go into a ``dict`` field: ``model.encoder_kwargs.weights=w.pt``.

    Raises:
        ConfigError: Malformed override, unknown key (with suggestions) or a value of the wrong type.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        where = _Where(f"override {item!r}")
        if not sep or not key:
            raise where.error("", "expected KEY=VALUE, e.g. optim.lr=3e-4")
        cfg = _set_path(cfg, key.split("."), raw.strip(), "", where)
    return cfg


def resolve_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of ``cls``, updated by the YAML file at ``path`` (if any), then by CLI ``overrides``."""
    cfg = load_yaml_config(cls, path) if path is not None else _build(cls, {}, "", _Where())
    return apply_overrides(cfg, overrides)


# ----------------------------------------------------------------------------------------------- writing


def config_to_dict(cfg: Any) -> Any:
    """A dataclass (or nested containers of them) as plain YAML/JSON-safe values: tuples become lists and
    paths strings."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write a config (dataclass or dict) to ``path`` as YAML, atomically, keys in field order."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True, default_flow_style=False)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


# ------------------------------------------------------------------------------------------------ internals


def _read_yaml(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, int]]:
    """The mapping in a YAML file and the line of every (dotted) key in it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file: {e}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        line = f"line {e.problem_mark.line + 1}: " if e.problem_mark else ""
        raise ConfigError(f"{path}: {line}invalid YAML: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of keys to values, "
                          f"not a {type(data).__name__}")
    lines: dict[str, int] = {}
    _collect_lines(node, "", lines)
    return data, lines


def _collect_lines(node: yaml.Node | None, prefix: str, lines: dict[str, int]) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    for knode, vnode in node.value:
        key = f"{prefix}{knode.value}"
        lines[key] = knode.start_mark.line + 1
        _collect_lines(vnode, f"{key}.", lines)


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as e:  # a forward reference that does not resolve: a bug in the config class
        raise TypeError(f"cannot resolve the field types of {cls.__name__}: {e}") from e


def _unknown(cls: type, key: str, name: str, where: _Where) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return where.error(key, f"unknown key; {hint}(known: {', '.join(names)})")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _build(cls: type[T], d: Any, prefix: str, where: _Where) -> T:
    if not isinstance(d, Mapping):
        raise where.error(prefix, f"expected a mapping of {cls.__name__} fields, got {_describe(d)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for name, value in d.items():
        if name not in fields:
            raise _unknown(cls, _join(prefix, str(name)), str(name), where)
        kwargs[name] = _coerce(value, hints[name], _join(prefix, name), where)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in kwargs and required:
            raise where.error(_join(prefix, name), "required key is missing")
    return cls(**kwargs)


def _update(cfg: T, d: Any, prefix: str, where: _Where) -> T:
    cls = type(cfg)
    if not isinstance(d, Mapping):
        raise where.error(prefix, f"expected a mapping of {cls.__name__} fields, got {_describe(d)}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    changes = {}
    for name, value in d.items():
        if name not in names:
            raise _unknown(cls, _join(prefix, str(name)), str(name), where)
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[name] = _update(current, value, _join(prefix, name), where)
        else:
            changes[name] = _coerce(value, hints[name], _join(prefix, name), where)
    return dataclasses.replace(cfg, **changes)


def _set_path(obj: Any, parts: list[str], raw: str, prefix: str, where: _Where) -> Any:
    """``obj`` (a dataclass instance or a dict) with the value at ``parts`` set from the string ``raw``."""
    name, rest = parts[0], parts[1:]
    key = _join(prefix, name)
    if isinstance(obj, dict):
        if not rest:
            return {**obj, name: _parse_any(raw)}
        child = obj.get(name, {})
        if not isinstance(child, dict):
            raise where.error(key, f"is {_describe(child)}, not a mapping; cannot set '{'.'.join(rest)}'")
        return {**obj, name: _set_path(child, rest, raw, key, where)}
    if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        raise where.error(prefix, f"is {_describe(obj)}, which has no key '{name}'")
    names = {f.name for f in dataclasses.fields(obj) if f.init}
    if name not in names:
        raise _unknown(type(obj), key, name, where)
    tp = _hints(type(obj))[name]
    current = getattr(obj, name)
    if rest:
        if current is None and dataclasses.is_dataclass(_strip_optional(tp)):
            current = _build(_strip_optional(tp), {}, key, where)
        if current is None and _origin(_strip_optional(tp)) is dict:
            current = {}
        return dataclasses.replace(obj, **{name: _set_path(current, rest, raw, key, where)})
    return dataclasses.replace(obj, **{name: _parse_typed(raw, tp, current, key, where)})


def _parse_any(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw


def _parse_typed(raw: str, tp: Any, current: Any, key: str, where: _Where) -> Any:
    """A CLI string as a value of type ``tp``: strings stay verbatim for ``str`` fields; others are read as
    YAML (so ``[1, 2]``, ``null`` and ``{a: 1}`` work) and then checked."""
    inner = _strip_optional(tp)
    if _is_optional(tp) and raw.lower() in _NONE_WORDS:
        return None
    literal = typing.get_args(inner) if _origin(inner) is typing.Literal else ()
    string_literal = bool(literal) and all(isinstance(a, str) for a in literal)
    if inner is str or string_literal:
        return _coerce(raw, tp, key, where)
    value = _parse_any(raw)
    if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
        return _update(current, value, key, where)
    return _coerce(value, tp, key, where)


def _origin(tp: Any) -> Any:
    return typing.get_origin(tp)


def _is_union(tp: Any) -> bool:
    return _origin(tp) is typing.Union or isinstance(tp, types.UnionType)


def _is_optional(tp: Any) -> bool:
    return _is_union(tp) and type(None) in typing.get_args(tp)


def _strip_optional(tp: Any) -> Any:
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if _origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type):
        return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(
            tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def _split_sequence(value: str) -> list[str]:
    """``"0.9,0.98"``, ``"(0.9, 0.98)"`` or ``"[a, b]"`` as items (for tuples and lists given on a CLI)."""
    text = value.strip()
    if text[:1] in "([" and text[-1:] in ")]":
        text = text[1:-1]
    return [_parse_any(p.strip()) for p in text.split(",")] if text.strip() else []


def _coerce(value: Any, tp: Any, key: str, where: _Where) -> Any:
    """``value`` checked (and, where lossless, converted) to the type ``tp``."""
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if len(members := [a for a in args if a is not type(None)]) == 1:
            return _coerce(value, members[0], key, where)  # X | None: X's own, more precise, error
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except ConfigError:
                pass
        raise where.error(key, f"expected {_type_name(tp)}, got {_describe(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise where.error(key, f"expected null, got {_describe(value)}")
    origin = _origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise where.error(key, f"expected {_type_name(tp)}, got {_describe(value)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return _build(tp, value, key, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.lower() in _TRUE_WORDS
        raise where.error(key, f"expected true or false, got {_describe(value)}")
    if tp is int or tp is float:  # a float field takes an integer too; a bool is neither
        if isinstance(value, (int, tp)) and not isinstance(value, bool):
            return value if tp is int else float(value)
        if isinstance(value, str):  # a CLI string; YAML 1.1 reads "3e-4" (no dot) as a string too
            try:
                return tp(value.strip())
            except ValueError:
                pass
        raise where.error(key, f"expected {_type_name(tp)}, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise where.error(key, f"expected a string, got {_describe(value)} (quote it in YAML)")
    if tp is Path or tp is os.PathLike:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise where.error(key, f"expected a path, got {_describe(value)}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = _split_sequence(value)
        if not isinstance(value, (list, tuple)):
            raise where.error(key, f"expected a list for {_type_name(tp)}, got {_describe(value)}")
        args = typing.get_args(tp)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis) or not args:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
        else:
            if len(value) != len(args):
                raise where.error(key, f"expected {len(args)} values, got {len(value)}: {_describe(value)}")
            items = [_coerce(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise where.error(key, f"expected a mapping, got {_describe(value)}")
        args = typing.get_args(tp)
        k_tp, v_tp = args if args else (Any, Any)
        return {_coerce(k, k_tp, key, where): _coerce(v, v_tp, f"{key}.{k}", where) for k, v in value.items()}
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise where.error(key, f"expected {_type_name(tp)}, got {_describe(value)}")
    raise TypeError(f"{key}: config field type {tp!r} is not supported")
