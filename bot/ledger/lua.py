"""Enum values as Lua string literals, so a script never carries a copied string."""

from __future__ import annotations

import json
from enum import StrEnum


def lua_strings(*enums: type[StrEnum]) -> dict[str, str]:
    """`$<enum>_<member>` -> the member's value as a Lua string literal, for `Template`."""
    return {
        f"{enum.__name__}_{member.name}": json.dumps(str(member))
        for enum in enums
        for member in enum
    }
