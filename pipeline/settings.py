"""Typed settings as dataclasses: fields with help texts, built from plain mappings with checked types.

The run config (pipeline/config.py) and every extension that owns settings (a search space's `Settings`)
use the same two pieces:

    @dataclass
    class Settings:
        width: int = setting(16, "Channels of the first stage.")

    build(Settings, {"width": "8"}, "space.settings.")   # ConfigError: 'space.settings.width' must be an integer

Unknown keys are an error that names the key and suggests the closest known one.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import field, fields
from typing import Any

from pipeline.errors import ConfigError


def setting(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help text (mutable defaults go through default_factory)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _resolve_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check/convert a YAML value to the field's declared type; name the key on failure."""
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return build(typ, value, key + ".")
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} must be true/false, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
    if typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
    if typ in (list, dict):
        if isinstance(value, typ):
            return value
        raise ConfigError(f"config key {key!r} must be a {typ.__name__}, got {value!r}")
    return value


def _unknown(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; known keys here: {', '.join(known)}")


def build(cls: type, values: dict, prefix: str = "") -> Any:
    known = [f.name for f in fields(cls)]
    kwargs = {}
    for name, value in values.items():
        if name not in known:
            raise _unknown(prefix + str(name), known)
        kwargs[name] = _coerce(value, _resolve_type(cls, name), prefix + name)
    return cls(**kwargs)




def as_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def help_rows(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type name, default, help) of every leaf field of a settings dataclass."""
    rows = []
    default = cls()
    for f in fields(cls):
        typ = _resolve_type(cls, f.name)
        if dataclasses.is_dataclass(typ):
            rows += help_rows(typ, prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, getattr(typ, "__name__", str(typ)), getattr(default, f.name),
                         f.metadata.get("help", "")))
    return rows
