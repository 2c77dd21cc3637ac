"""The budget eviction policy: keep models loaded while they fit, evict the least
recently used idle ones when they don't.

Pure and stateless after construction.  The budget is a count (`maxLoaded`) and/or
named capacities (`resources`, in the user's units); each model declares its
sizes (`Model.resources`; a model without them counts 0 of each resource and 1
toward `maxLoaded`).  For a target, with `ctx` from the scheduler:

1. the target is already starting or ready -> nothing to do;
2. a resource the target uses has a probe and no fresh result -> ask for the
   probe and wait (`Eviction.probe`);
3. the target fits beside every model in `ctx.running` (starting, ready and
   stopping ones all count, since their memory is not free yet) -> start it;
4. otherwise evict candidates -- running models that are neither busy nor pinned
   -- in least-recently-used order (ties: lower `evictCosts`, then model id)
   until it fits;
5. if even evicting every candidate is not enough: when the models that can
   never be evicted (the pinned ones) leave no room by their declared sizes the
   target can never be placed (`refuse`); otherwise it waits (`wait`) until
   busy models finish.

"Fits" means: the count stays within `maxLoaded`; for each resource the declared
sizes of the kept models plus the target's stay within the capacity; and for
each probed resource with a result, the free amount reported plus the declared
sizes of the models being evicted cover the target's (so memory held by
programs outside llama-swap counts).  A failed probe (result None) leaves the
declared sizes alone in charge.

Invariant this gives the scheduler (checked by property tests): the declared
sizes of the starting and ready models never exceed a capacity and their number
never exceeds `maxLoaded`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llama_swap.compiler.plan import Budget, Model
from llama_swap.runtime.core.schedulers.base import NOTHING, Evicted, Eviction, EvictionContext


def amount(value: float) -> str:
    """An amount as the user wrote it: `22000`, not `22000.0`."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class BudgetSwapper:
    """`Swapper` for `routing.router.use: budget`."""

    def __init__(self, budget: Budget, models: Mapping[str, Model]) -> None:
        self.max_loaded = budget.maxLoaded
        self.capacity: dict[str, float] = dict(budget.resources)
        self.probed: tuple[str, ...] = tuple(sorted(budget.probes))
        self._costs = dict(budget.evictCosts)
        self._sizes: dict[str, dict[str, float]] = {
            mid: {r: float(v) for r, v in m.resources.items()} for mid, m in models.items()
        }

    def size(self, model: str, resource: str) -> float:
        """The model's declared amount of `resource` (0 when it declares none)."""
        return self._sizes.get(model, {}).get(resource, 0.0)

    def used(self, models: Sequence[str]) -> dict[str, float]:
        """The declared sizes of `models`, summed per budget resource."""
        return {r: sum(self.size(m, r) for m in models) for r in self.capacity}

    def _shortfall(
        self,
        target: str,
        kept: Sequence[str],
        evicted: Sequence[str],
        free: Mapping[str, float | None],
    ) -> tuple[str, str] | None:
        """The first constraint the target breaks beside `kept`, as (label, text); None
        when it fits."""
        if self.max_loaded and len(kept) + 1 > self.max_loaded:
            return "maxLoaded", f"budget maxLoaded {len(kept)}/{self.max_loaded} needs 1"
        for resource, capacity in self.capacity.items():
            need = self.size(target, resource)
            used = sum(self.size(m, resource) for m in kept)
            if need > 0 and used + need > capacity:
                return resource, (
                    f"budget {resource} {amount(used)}/{amount(capacity)} needs {amount(need)}"
                )
        for resource in self.probed:
            need = self.size(target, resource)
            reported = free.get(resource)
            if need <= 0 or reported is None:
                continue
            freed = sum(self.size(m, resource) for m in evicted)
            if reported + freed < need:
                return f"probe:{resource}", (
                    f"budget {resource} free {amount(reported)} (probed) + {amount(freed)} "
                    f"evicted needs {amount(need)}"
                )
        return None

    def _candidates(self, ctx: EvictionContext) -> list[str]:
        """Evictable running models, least recently used first."""
        order = {m: i for i, m in enumerate(sorted(ctx.running))}
        evictable = [m for m in ctx.running if m not in ctx.busy and m not in ctx.pinned]
        return sorted(
            evictable,
            key=lambda m: (ctx.last_used.get(m, -math.inf), self._costs.get(m, 1), order[m]),
        )

    def decide(self, target: str, ctx: EvictionContext) -> Eviction:
        if ctx.target_loaded:
            return NOTHING
        missing = tuple(
            r for r in self.probed if self.size(target, r) > 0 and r not in ctx.free
        )
        if missing:
            return Eviction(probe=missing)
        kept = list(ctx.running)
        evicted: list[Evicted] = []
        candidates = self._candidates(ctx)
        short = self._shortfall(target, kept, (), ctx.free)
        while short is not None and candidates:
            model = candidates.pop(0)
            kept.remove(model)
            idle = ctx.now - ctx.last_used[model] if model in ctx.last_used else None
            since = f"idle {max(0, round(idle))} s" if idle is not None else "never used"
            evicted.append(Evicted(model, short[0], f"{short[1]}: evicting {model}, {since}"))
            short = self._shortfall(target, kept, [e.model for e in evicted], ctx.free)
        if short is None:
            return Eviction(tuple(evicted)) if evicted else NOTHING
        pinned = [m for m in ctx.running if m in ctx.pinned]
        never = self._shortfall(target, pinned, (), {})
        if never is not None:
            return Eviction(
                refuse=f"model {target} does not fit beside the pinned models "
                f"{', '.join(pinned)}: {never[1]}"
            )
        return Eviction(wait=True)

    def explain(self, target: str, ctx: EvictionContext) -> str:
        d = self.decide(target, ctx)
        if d.refuse:
            return f"budget: {d.refuse}"
        if d.probe:
            return f"budget: model={target} waits for probes {list(d.probe)}"
        if d.wait:
            short = self._shortfall(target, ctx.running, (), ctx.free)
            return f"budget: model={target} waits: {short[1] if short else 'busy'}"
        if ctx.target_loaded:
            return f"budget: model={target} already loaded"
        evicted = {e.model for e in d.evict}
        kept = [m for m in ctx.running if m not in evicted]
        use = self.used([*kept, target])
        parts = [f"{r} {amount(use[r])}/{amount(c)}" for r, c in self.capacity.items()]
        if self.max_loaded:
            parts.insert(0, f"loaded {len(kept) + 1}/{self.max_loaded}")
        evict = "[" + " ".join(e.model for e in d.evict) + "]"
        return f"budget: model={target} evict={evict} {' '.join(parts)}".rstrip()


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """The budget and what `loaded` models use of it by their declared sizes."""

    max_loaded: int
    loaded: tuple[str, ...]
    # int | float, not float: compiled, a value read as `float` becomes one (24 -> 24.0)
    capacity: Mapping[str, int | float]
    used: Mapping[str, int | float]

    def to_json(self) -> dict[str, object]:
        """The shape /running and /api/events show (`maxLoaded` 0: no count limit)."""
        return {
            "maxLoaded": self.max_loaded,
            "loaded": len(self.loaded),
            "models": list(self.loaded),
            "resources": {
                r: {"capacity": c, "used": self.used.get(r, 0)} for r, c in self.capacity.items()
            },
        }


def whole_or_float(value: float) -> int | float:
    """`value` as an int when it is whole, so the JSON shows 24, not 24.0.  Two returns,
    not a conditional expression: compiled (mypyc), `a if c else b` of an int and a float
    is a float, as is any value read where `float` is declared."""
    if value.is_integer():
        return int(value)
    return value


def budget_usage(budget: Budget, models: Mapping[str, Model], loaded: Sequence[str]) -> BudgetUsage:
    """What `loaded` (models holding memory: starting, ready or stopping) use of `budget`."""
    ids = tuple(sorted(m for m in loaded if m in models))
    used: dict[str, int | float] = {}
    for r in budget.resources:
        used[r] = whole_or_float(float(sum(float(models[m].resources.get(r, 0)) for m in ids)))
    return BudgetUsage(budget.maxLoaded, ids, dict(budget.resources), used)
