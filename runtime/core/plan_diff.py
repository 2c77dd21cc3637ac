"""What a hot reload changes: a pure, per-model comparison of two resolved plans.

The hot swap (runtime/engine/hotswap.py) must decide, for every model, whether its
running process can stay, must be restarted, or must go.  That decision is a
pure function of the two frozen plans, so it lives here with no I/O, no
asyncio and no clock, and is tested on its own (tests/runtime/test_plan_diff.py).

Classification of a model's fields (see docs/reload.md):
- RESTART_FIELDS change how the child process is started, reached or stopped
  (argv, env, proxy URL, health endpoint, stop command, upstream timeouts);
  a running process built from the old definition is stale.
- LIVE_FIELDS only change how the proxy treats requests (ttl, aliases,
  filters, listing metadata, concurrency limit...); the process is reused.
- Any field not named in either set is treated as needing a restart, so a
  field added to `compiler.plan.Model` later errs on the safe side.

Invariants: `added`, `removed`, `kept`, `changed_restart` and `changed_live`
partition the union of both plans' model ids (each id is in exactly one), and
every tuple is sorted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from llama_swap.compiler.plan import Model, Plan, Settings, plan_to_json

RESTART_FIELDS: frozenset[str] = frozenset(
    {"cmd", "cmdStop", "proxy", "checkEndpoint", "env", "timeouts"}
)
LIVE_FIELDS: frozenset[str] = frozenset(
    {
        "ttl",
        "aliases",
        "filters",
        "metadata",
        "concurrencyLimit",
        "resources",
        "name",
        "description",
        "unlisted",
        "useModelName",
        "sendLoadingState",
        "capabilities",
        "unloadTimeout",  # read when the process is next stopped
    }
)

# Every Model field but its id, in declaration order (the order changes are reported in).
_MODEL_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Model) if f.name != "id")


# The last few digests computed, by plan identity: serialising a 1,000-model plan
# takes tens of ms, so the reload thread computes it once and the diff on the
# event loop finds it here.  Entries hold the plan itself, so an id is never reused
# while its entry lives.
_DIGEST_CACHE: dict[int, tuple[Plan, str]] = {}
_DIGEST_CACHE_SIZE = 8


def plan_digest(plan: Plan) -> str:
    """sha256 (hex) of the plan's canonical JSON: equal plans have equal digests."""
    hit = _DIGEST_CACHE.get(id(plan))
    if hit is not None and hit[0] is plan:
        return hit[1]
    digest = hashlib.sha256(plan_to_json(plan).encode("utf-8")).hexdigest()
    remember_digest(plan, digest)  # called from the reload thread and the loop: tolerant
    return digest


def remember_digest(plan: Plan, digest: str) -> None:
    """Record a digest computed elsewhere (e.g. by a compiler.session.CompileSession) for `plan`.

    The caller vouches that `digest` is sha256 of `plan_to_json(plan)`; later
    `plan_digest(plan)` calls (the diff on the event loop) then cost nothing.
    """
    try:
        while len(_DIGEST_CACHE) >= _DIGEST_CACHE_SIZE:
            _DIGEST_CACHE.pop(next(iter(_DIGEST_CACHE)), None)
    except (RuntimeError, StopIteration):
        pass
    _DIGEST_CACHE[id(plan)] = (plan, digest)


def short_digest(digest: str) -> str:
    """The first 12 hex digits, for log lines."""
    return digest[:12]


def model_field_changes(old: Model, new: Model) -> tuple[str, ...]:
    """Names of the fields that differ between two definitions of one model, in field order."""
    return tuple(name for name in _MODEL_FIELD_NAMES if getattr(old, name) != getattr(new, name))


def needs_restart(changed_fields: tuple[str, ...]) -> bool:
    """True if any changed field is not known to be safe to apply to a running process."""
    return any(name not in LIVE_FIELDS for name in changed_fields)


def _empty_fields() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PlanDiff:
    """The difference between the running plan and a new one, model by model."""

    old_digest: str
    new_digest: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()  # identical definitions
    changed_restart: tuple[str, ...] = ()  # the running process must be replaced
    changed_live: tuple[str, ...] = ()  # new settings apply to the running process
    # Which fields differ, for every id in changed_restart and changed_live.
    changed_fields: Mapping[str, tuple[str, ...]] = field(default_factory=_empty_fields)
    routing_changed: bool = False  # scheduler, priorities, router, groups or matrix
    settings_changed: tuple[str, ...] = ()  # names of top-level Settings fields that differ
    peers_changed: bool = False
    preload_changed: bool = False
    # Request routing only: no process restarts.  The active profile is kept when the new
    # plan still has it (else cleared); spillover counts of running requests are kept.
    selectors_changed: bool = False
    profiles_changed: bool = False

    @property
    def changed(self) -> tuple[str, ...]:
        """Every model whose definition differs (restart or live), sorted."""
        return tuple(sorted(self.changed_restart + self.changed_live))

    @property
    def identical(self) -> bool:
        """True when the two plans serialise to the same bytes (nothing at all to do)."""
        return self.old_digest == self.new_digest

    @property
    def stale(self) -> tuple[str, ...]:
        """Models whose current process must be stopped once idle (restart or removal), sorted."""
        return tuple(sorted(self.changed_restart + self.removed))

    def summary(self) -> str:
        """The one log line written per applied reload."""
        parts = [
            f"config reloaded: plan {short_digest(self.old_digest)} -> {short_digest(self.new_digest)}",
            f"models added {len(self.added)}, changed {len(self.changed)}"
            f" ({len(self.changed_restart)} restart), removed {len(self.removed)},"
            f" kept {len(self.kept)}",
        ]
        extras = []
        if self.routing_changed:
            extras.append("routing changed")
        if self.settings_changed:
            extras.append("settings changed: " + ",".join(self.settings_changed))
        if self.peers_changed:
            extras.append("peers changed")
        if self.selectors_changed:
            extras.append("selectors changed")
        if self.profiles_changed:
            extras.append("profiles changed")
        if extras:
            parts.append("; ".join(extras))
        return "; ".join(parts)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form (for the events stream and /api/config/status)."""
        return {
            "oldDigest": self.old_digest,
            "newDigest": self.new_digest,
            "added": list(self.added),
            "removed": list(self.removed),
            "kept": list(self.kept),
            "changedRestart": list(self.changed_restart),
            "changedLive": list(self.changed_live),
            "changedFields": {k: list(v) for k, v in self.changed_fields.items()},
            "routingChanged": self.routing_changed,
            "settingsChanged": list(self.settings_changed),
            "peersChanged": self.peers_changed,
            "preloadChanged": self.preload_changed,
            "selectorsChanged": self.selectors_changed,
            "profilesChanged": self.profiles_changed,
        }


def _settings_changes(old: Settings, new: Settings) -> tuple[str, ...]:
    return tuple(f.name for f in fields(Settings) if getattr(old, f.name) != getattr(new, f.name))


def diff_plans(
    old: Plan, new: Plan, *, old_digest: str | None = None, new_digest: str | None = None
) -> PlanDiff:
    """Compare two plans. Digests may be passed in when the caller already computed them."""
    old_ids = set(old.models)
    new_ids = set(new.models)
    kept: list[str] = []
    restart: list[str] = []
    live: list[str] = []
    changed_fields: dict[str, tuple[str, ...]] = {}
    for mid in sorted(old_ids & new_ids):
        before, after = old.models[mid], new.models[mid]
        if before == after:  # the common case, and much cheaper than field by field
            kept.append(mid)
            continue
        changes = model_field_changes(before, after)
        if not changes:
            kept.append(mid)
            continue
        changed_fields[mid] = changes
        (restart if needs_restart(changes) else live).append(mid)
    return PlanDiff(
        old_digest=old_digest if old_digest is not None else plan_digest(old),
        new_digest=new_digest if new_digest is not None else plan_digest(new),
        added=tuple(sorted(new_ids - old_ids)),
        removed=tuple(sorted(old_ids - new_ids)),
        kept=tuple(kept),
        changed_restart=tuple(restart),
        changed_live=tuple(live),
        changed_fields=MappingProxyType(changed_fields),
        routing_changed=old.routing != new.routing,
        settings_changed=_settings_changes(old.settings, new.settings),
        peers_changed=dict(old.peers) != dict(new.peers),
        preload_changed=old.preload != new.preload,
        selectors_changed=dict(old.selectors) != dict(new.selectors),
        profiles_changed=dict(old.profiles) != dict(new.profiles),
    )
