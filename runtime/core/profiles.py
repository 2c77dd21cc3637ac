"""Profiles at runtime: which name a pin rewrites a request to, and which models are pinned.

A plan lists profiles (`plan.profiles`); at most one is active, chosen at runtime
(`PUT /api/profiles/active`) and held by the router.  While one is active:

- a model route naming a pin key exactly is served by the pin's target
  (`pin_target`); an empty target disables the name (the request then names no
  model: 404);
- `/upstream/<path>`: the longest pin key equal to the path or followed by `/`
  wins (`upstream_pin`); only the path changes;
- the models the pins lead to are never evicted (`pinned_models`);
- `/v1/models` lists each pin whose key is not already a name of something else
  (`listed_pins`).

Management routes (unload, log streams, `/running`, preload, priorities) keep
using concrete names.  Pure functions over the plan and the active name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llama_swap.compiler.plan import Plan, Profile
from llama_swap.runtime.core.errors import RouteError


def active_profile(plan: Plan, name: str | None) -> Profile | None:
    return plan.profiles.get(name) if name else None


def pin_target(plan: Plan, active: str | None, requested: str) -> str | None:
    """The name `requested` is rewritten to under the active profile ("" = disabled), or
    None when no pin applies."""
    profile = active_profile(plan, active)
    if profile is None:
        return None
    return profile.pins.get(requested)


@dataclass(frozen=True, slots=True)
class UpstreamPin:
    """An `/upstream` path under a pin: `path` is the pin key (the prefix) and `target`
    what it becomes ("" = disabled)."""

    pin: str
    target: str


def upstream_pin(plan: Plan, active: str | None, path: str) -> UpstreamPin | None:
    """The longest pin key that is `path` (after `/upstream/`, decoded) or a prefix of it
    followed by `/`."""
    profile = active_profile(plan, active)
    if profile is None:
        return None
    best: UpstreamPin | None = None
    for pin, target in profile.pins.items():
        if (path == pin or path.startswith(pin + "/")) and (
            best is None or len(pin) > len(best.pin)
        ):
            best = UpstreamPin(pin, target)
    return best


def pinned_models(plan: Plan, active: str | None) -> frozenset[str]:
    """The local model ids the active profile's pins lead to: a pinned model, or every
    local target of a pinned selector.  These are never evicted while the profile is
    active.  Empty when no profile is active."""
    profile = active_profile(plan, active)
    if profile is None:
        return frozenset()
    out: set[str] = set()
    for target in profile.pins.values():
        if not target:
            continue
        selector = plan.selectors.get(target)
        if selector is not None:
            out.update(r for r in selector.resolved if r in plan.models)
            continue
        model_id = plan.resolve(target)
        if model_id is not None:
            out.add(model_id)
    return frozenset(out)


def _taken(plan: Plan, name: str) -> bool:
    """Whether `name` already means something without a profile."""
    return (
        name in plan.models
        or name in plan.aliases
        or name in plan.peerNames
        or name in plan.selectors
    )


def listed_pins(plan: Plan, active: str | None) -> list[str]:
    """Pin keys `/v1/models` adds for the active profile (non-empty target, key new)."""
    profile = active_profile(plan, active)
    if profile is None:
        return []
    return sorted(pin for pin, target in profile.pins.items() if target and not _taken(plan, pin))


def profiles_body(plan: Plan, active: str | None) -> dict[str, Any]:
    """`GET /api/profiles`."""
    return {
        "active": active if active in plan.profiles else None,
        "profiles": [
            {"id": p.id, "description": p.description, "pins": dict(p.pins)}
            for p in sorted(plan.profiles.values(), key=lambda p: p.id)
        ],
    }


def requested_profile(plan: Plan, body: Any) -> str | None | RouteError:
    """The profile a `PUT /api/profiles/active` body names (None = clear it), or the error
    to answer.  `body` is the parsed JSON (anything else: `...` not a mapping)."""
    if not isinstance(body, Mapping):
        return RouteError(400, "invalid profile request")
    if "name" not in body:
        return RouteError(400, "profile name is required")
    name = body["name"]
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        return RouteError(400, "profile name must be a string or null")
    if name not in plan.profiles:
        return RouteError(404, f'profile "{name}" not found')
    return name
