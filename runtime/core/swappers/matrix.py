"""The matrix eviction policy: keep the cheapest allowed set of models running.

Pure and stateless after construction.  The compiler has already expanded the
matrix DSL into `plan.routing.matrix.sets[*].combinations` (each a sorted tuple
of model ids) in solver order: sets in topological-then-definition order,
combinations in expansion order.  A set allows any subset of a combination to
run together; only the requested model is started.

The solver (the Go original's, so a config picks the same models to keep), for a
requested model and the running list:

1. the model is already running -> evict nothing;
2. candidates = every combination containing the model; none -> the model runs
   alone: evict everything running;
3. a candidate's cost = the sum of evict costs (default 1) of the running models
   it does not contain;
4. the cheapest candidate wins; ties go to the earliest in solver order;
5. evict = the running models not in the winner, in running order.

`evictCosts` may be keyed by model id or by matrix var (a var maps to a model
id through `vars`); a model id key wins.

Pinned models (`EvictionContext.pinned`): step 2's candidates are narrowed to the
combinations that also contain every running pinned model, when there is one.
When none does (or no combination contains the target), there is no choice: the
plain solver decides, a pinned model may be evicted, and its log line says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llama_swap.compiler.plan import Matrix
from llama_swap.runtime.core.schedulers.base import Evicted, Eviction, EvictionContext
from llama_swap.runtime.core.swappers.group import format_list


@dataclass(frozen=True, slots=True)
class Decision:
    """The solver's answer, kept for the log line."""

    evict: tuple[str, ...]
    set_name: str  # "" when no set contains the model
    dsl: str
    target_set: tuple[str, ...]  # the winning combination ((model,) when none)
    cost: int


class MatrixSwapper:
    """`Swapper` for `routing.router.use: matrix`."""

    def __init__(self, matrix: Matrix) -> None:
        self._candidates: list[tuple[str, str, frozenset[str], tuple[str, ...]]] = [
            (s.name, s.dsl, frozenset(combo), tuple(combo))
            for s in matrix.sets
            for combo in s.combinations
        ]
        costs: dict[str, int] = {}
        for var, model in matrix.vars.items():
            if var in matrix.evictCosts:
                costs[model] = int(matrix.evictCosts[var])
        for key, cost in matrix.evictCosts.items():
            if key not in matrix.vars:
                costs[key] = int(cost)
        self._costs = costs

    def evict_cost(self, model: str) -> int:
        return self._costs.get(model, 1)

    def solve(
        self, target: str, running: Sequence[str], pinned: frozenset[str] = frozenset()
    ) -> Decision:
        containing = [c for c in self._candidates if target in c[2]]
        keep = {m for m in running if m in pinned}
        if keep:
            with_pins = [c for c in containing if keep <= c[2]]
            containing = with_pins or containing
        if target in running:
            name, dsl, _, combo = containing[0] if containing else ("", "", None, (target,))
            return Decision((), name, dsl, combo, 0)
        if not containing:
            evict = tuple(m for m in running if m != target)
            return Decision(evict, "", "", (target,), sum(self.evict_cost(m) for m in evict))
        best: tuple[int, str, str, frozenset[str], tuple[str, ...]] | None = None
        for name, dsl, members, combo in containing:
            cost = sum(self.evict_cost(m) for m in running if m not in members)
            if best is None or cost < best[0]:  # strict: ties keep the earlier candidate
                best = (cost, name, dsl, members, combo)
        assert best is not None
        cost, name, dsl, members, combo = best
        evict = tuple(m for m in running if m not in members)
        return Decision(evict, name, dsl, combo, cost)

    def eviction_for(self, target: str, running: Sequence[str]) -> tuple[str, ...]:
        return self.solve(target, running).evict

    def decide(self, target: str, ctx: EvictionContext) -> Eviction:
        d = self.solve(target, ctx.running, ctx.pinned)
        set_name = d.set_name or "(none)"
        notes = tuple(
            Evicted(
                model,
                "matrix",
                f"matrix set {set_name} keeps {format_list(d.target_set)}"
                f"{' (pinned, but no set keeps it)' if model in ctx.pinned else ''}: "
                f"evicting {model} for {target}, cost {self.evict_cost(model)}",
            )
            for model in d.evict
        )
        return Eviction(notes, line=self._describe(target, ctx.running, d))

    def describe(self, target: str, running: Sequence[str]) -> str:
        return self._describe(target, running, self.solve(target, running))

    def _describe(self, target: str, running: Sequence[str], d: Decision) -> str:
        set_name = d.set_name or "(none)"
        if d.evict:
            return (
                f"matrix: model={target} set={set_name} dsl=\"{d.dsl}\" evict={format_list(d.evict)}"
                f" target={format_list(d.target_set)} cost={d.cost}"
            )
        if not running:
            return f"matrix: model={target} starting (no models running)"
        if target in running:
            return f"matrix: model={target} already running in set={set_name} dsl=\"{d.dsl}\""
        return (
            f"matrix: model={target} set={set_name} dsl=\"{d.dsl}\" evict=[]"
            f" target={format_list(d.target_set)} cost=0"
        )
