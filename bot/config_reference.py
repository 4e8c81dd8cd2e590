"""The configuration reference, generated from the pydantic models so it cannot drift.

`parrotbot config-reference > docs/configuration.md` rewrites it; a test fails when the
committed file differs from what the models say.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bot.config import BotConfig

HEADER = """\
# Configuration reference

Generated from `bot/config.py` by `parrotbot config-reference`; do not edit by hand.
The `model.char_rnn` and `model.gpt2` settings are the trainer's own classes
(`training/char_rnn_config.py`, `training/gpt2_config.py`), so these limits are the trainer's.

One YAML file per bot account. Unknown keys are errors; relative paths are resolved against
the config file's folder; secrets never go in the file (they come from the environment:
`CONSUMER_KEY`, `CONSUMER_SECRET`, `ACCESS_TOKEN`, `ACCESS_TOKEN_SECRET`, `BEARER_TOKEN`).
`parrotbot check-config PATH` validates a file.

| setting | type | default | constraints | meaning |
| --- | --- | --- | --- | --- |
"""


def render() -> str:
    rows = list(_rows(BotConfig, prefix=""))
    return HEADER + "".join(f"| {' | '.join(row)} |\n" for row in rows)


def _rows(model: type[BaseModel], prefix: str):
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        if nested is not None and not _optional_section(field.annotation):
            yield from _rows(nested, prefix=f"{path}.")
            continue
        yield (
            f"`{path}`",
            _type_name(field.annotation),
            _default(field),
            _constraints(field),
            (field.description or "").replace("|", "\\|"),
        )
        if nested is not None:  # an optional section: its row, then the settings inside it
            yield from _rows(nested, prefix=f"{path}.")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The section's model, for a section and for an optional one (`AwsSettings | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if _optional_section(annotation):
        return next(arg for arg in get_args(annotation) if arg is not type(None))
    return None


def _optional_section(annotation: Any) -> bool:
    if get_origin(annotation) not in (Union, types.UnionType):
        return False
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    return len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel)


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation) or (Any,)
        return f"list of {_type_name(item)}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "(required)"
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()
    if value is None:
        return "absent"
    if isinstance(value, BaseModel):
        return "(see below)"
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def _metadata(field: FieldInfo) -> list[Any]:
    """Constraints on the field, and on an `Annotated` type inside an optional one."""
    found = list(field.metadata)
    for arg in get_args(field.annotation):
        if get_origin(arg) is Annotated:
            for meta in get_args(arg)[1:]:
                found.extend(meta.metadata if isinstance(meta, FieldInfo) else [meta])
    return found


def _constraints(field: FieldInfo) -> str:
    found = []
    for meta in _metadata(field):
        for attribute, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(meta, attribute, None)
            if value is not None:
                found.append(f"{symbol} {value}")
        if getattr(meta, "min_length", None):
            found.append(f"at least {meta.min_length}")
        if getattr(meta, "pattern", None):
            found.append(f"matches `{meta.pattern}`")
    return ", ".join(found)
