"""Eviction policies ("swappers"): given a target and what runs, what must stop.

`make_swapper(plan)` picks the policy named by `plan.routing.router`:
`group` (groups with swap/exclusive/persistent), `matrix` (allowed sets of
co-resident models, cheapest eviction wins) or `budget` (keep models while they
fit a count and named capacities, evict the least recently used idle ones).  All are pure and satisfy
`runtime.core.schedulers.base.Swapper`.  Only the `fifo` scheduler consults them;
`serial` always evicts every other model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.swappers.budget import BudgetSwapper
from llama_swap.runtime.core.swappers.group import DEFAULT_GROUP, GroupSwapper
from llama_swap.runtime.core.swappers.matrix import MatrixSwapper

if TYPE_CHECKING:
    from llama_swap.runtime.core.schedulers.base import Swapper

__all__ = ["DEFAULT_GROUP", "BudgetSwapper", "GroupSwapper", "MatrixSwapper", "make_swapper", "pinned_by_plan"]


def make_swapper(plan: Plan) -> Swapper:
    """The eviction policy for `plan` (group unless the plan selects a matrix)."""
    routing = plan.routing
    if routing.router == "budget":
        if routing.budget is None:
            raise ValueError("routing.router is 'budget' but the plan has no budget")
        return BudgetSwapper(routing.budget, plan.models)
    if routing.router == "matrix":
        if routing.matrix is None:
            raise ValueError("routing.router is 'matrix' but the plan has no matrix")
        return MatrixSwapper(routing.matrix)
    if routing.router not in ("group", ""):
        raise ValueError(f"unknown router {routing.router!r} (valid: group, matrix, budget)")
    return GroupSwapper(routing.groups, plan.models.keys())


def pinned_by_plan(plan: Plan) -> frozenset[str]:
    """Models the plan itself pins: the members of persistent groups."""
    return frozenset(
        m for g in plan.routing.groups.values() if g.persistent for m in g.members
    )
