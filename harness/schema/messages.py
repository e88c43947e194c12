"""An OmegaConf error as one line that starts with the key as the user types it, and what is
valid there: the keys that exist (and where a key of that name does exist), or the type the
key takes. Read from the schema's dataclasses (public API only)."""
from __future__ import annotations

import dataclasses
import typing

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def message(err: OmegaConfBaseException, schema: DictConfig, plain: DictConfig) -> str:
    key = getattr(err, "full_key", None) or ""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(schema, parent) if parent else schema
    if isinstance(err, ConfigKeyError) and isinstance(node, DictConfig):
        known = dotted_keys(schema) + [f"optim.optimizer.{a}" for a in plain.optim.get("optimizer") or {}]
        elsewhere = [k for k in known if k.rpartition(".")[2] == leaf and k != key]
        hint = f"; did you mean {' or '.join(elsewhere)}?" if elsewhere else ""
        where = f"of {parent}" if parent else "at the top level"
        return f"{key}: no such key{hint} (valid keys {where}: {', '.join(node)})"
    expected = _expected(schema, key)
    if expected:
        return f"{key} must be {expected}, got {OmegaConf.select(plain, key)!r}"
    text = str(err).split("\n")[0].strip()
    return f"{key}: {text}" if key else text


def _field_type(schema: DictConfig, key: str):
    """The annotated type of the schema field at `key`, or None."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(schema, parent) if parent else schema
    cls = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if not dataclasses.is_dataclass(cls):
        return None
    return typing.get_type_hints(cls).get(leaf)


def _expected(schema: DictConfig, key: str) -> str | None:
    """What the schema's field at `key` accepts, in words ("an integer", "a number or null")."""
    typ = _field_type(schema, key)
    optional = typing.get_origin(typ) is typing.Union and type(None) in typing.get_args(typ)
    if optional:
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    words = _WORDS.get(typ)
    return f"{words} or null" if words and optional else words


def dotted_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Every key of a schema as the user types it (the optimizer's arguments left out)."""
    out = []
    for k in node:
        if k == "optimizer":
            continue
        out.append(prefix + str(k))
        child = None if OmegaConf.is_missing(node, k) else node.get(k)
        if isinstance(child, DictConfig):
            out += dotted_keys(child, f"{prefix}{k}.")
    return out
