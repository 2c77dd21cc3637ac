"""Request filters: sanitising `stripParams`, `setParams` and `setParamsByID`.

The plan holds filters already cleaned so the runtime applies them blindly:
`stripParams` becomes a sorted list without blanks, duplicates or the
protected `model`; `setParams` and every `setParamsByID` entry lose `model`
and get sorted keys (the application order).  A model's legacy
`filters.strip_params` is used only when `stripParams` is empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_swap.compiler.commands import go_trim

PROTECTED_PARAMS = ("model",)


def sanitize_strip_params(text: str) -> tuple[str, ...]:
    """`" b, a,model ,, a"` -> `("a", "b")`."""
    seen: set[str] = set()
    for part in text.split(","):
        name = go_trim(part)
        if name and name not in PROTECTED_PARAMS:
            seen.add(name)
    return tuple(sorted(seen))


def sanitize_set_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Drop protected keys; sort the rest."""
    return {k: params[k] for k in sorted(params) if k not in PROTECTED_PARAMS}


def sanitize_set_params_by_id(by_id: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Sanitise each entry; entries sorted by requested name."""
    return {key: sanitize_set_params(by_id[key] or {}) for key in sorted(by_id)}
