"""`profiles`: named pin sets a client switches at runtime (`PUT /api/profiles/active`).

```yaml
profiles:
  coding:
    description: Coding setup        # optional
    pins:                            # at least one
      llm-code: big-model            # requested name -> target
      llm-plan: planner              # a selector id may be a target
      image-gen: ~                   # null or "" disables the name while active
```

Checked as the Go original checks them, after peers and selectors: a name,
at least one pin, no blank pin key, and each non-empty target a base model
name (`NameSpace.resolve_base`) or a selector id.  Pins do not chain: a
target naming another pin is unknown unless it is also a model.  Pin keys may
equal model ids or aliases and shadow them while the profile is active.

The old list form (`coding: [a, b]`) is kept, with the warning it always had,
and ignored: the Go original now refuses it, but configs written for the
original before v250 (its own aider example among them) still use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_swap.compiler.collect import Collector, Keys, get_map, get_str
from llama_swap.compiler.namespaces import NameSpace
from llama_swap.compiler.plan import Profile, freeze

LEGACY_WARNING = (
    "the list form of a profile is deprecated and ignored (the Go original no longer accepts "
    "it); write a mapping with description and pins"
)


def _pins(c: Collector, keys: Keys, raw: Any) -> dict[str, str]:
    pins: dict[str, str] = {}
    for pin, target in get_map(c, (*keys, "pins"), raw).items():
        pins[pin] = get_str(c, (*keys, "pins", pin), target, "")
    return pins


def pin_keys(raw: Any) -> dict[str, list[str]]:
    """Pin keys by profile, read leniently (for the peer namespace check)."""
    out: dict[str, list[str]] = {}
    for name, value in (raw or {}).items() if isinstance(raw, Mapping) else ():
        pins = value.get("pins") if isinstance(value, Mapping) else None
        if isinstance(pins, Mapping):
            out[str(name)] = [str(k) for k in pins]
    return out


def resolve_profiles(
    c: Collector, raw: Any, names: NameSpace, selectors: set[str]
) -> dict[str, Profile]:
    """Every valid profile by id (sorted); the legacy list form warns and is skipped."""
    out: dict[str, Profile] = {}
    for name, value in get_map(c, ("profiles",), raw).items():
        keys: Keys = ("profiles", name)
        if isinstance(value, list):
            c.warn(keys, LEGACY_WARNING)
            continue
        n_errors = len(c.errors)
        if name.strip() == "":
            c.error(keys, "profile names cannot be empty")
            continue
        body = get_map(c, keys, value)
        pins = _pins(c, keys, body.get("pins"))
        if not pins:
            c.error((*keys, "pins"), "must contain at least one entry")
        for pin, target in pins.items():
            pkeys = (*keys, "pins", pin)
            if pin.strip() == "":
                c.error((*keys, "pins"), "pin names cannot be empty")
            elif target and target not in selectors and names.resolve_base(target) is None:
                c.error(pkeys, f'references unknown model "{target}"')
        if len(c.errors) == n_errors:
            out[name] = Profile(
                id=name,
                description=get_str(c, (*keys, "description"), body.get("description"), ""),
                pins=freeze(dict(sorted(pins.items()))),
            )
    return {pid: out[pid] for pid in sorted(out)}
