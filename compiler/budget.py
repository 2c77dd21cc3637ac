"""The budget router's settings and the models' declared `resources`.

`routing.router.use: budget` keeps models loaded while they fit a budget (a
count, `maxLoaded`, and/or named capacities, `resources`) and evicts the least
recently used idle model when they don't.  This module reads those settings and
checks them against the models, so that a budget the runtime could never honour
is a compile error rather than a request waiting forever:

- at least one of `maxLoaded` or `resources`; `maxLoaded` >= 1; capacities are
  positive numbers, sizes non-negative numbers;
- a model may use only resources the budget declares, and no model alone may
  need more than a capacity;
- `probes` name declared resources; `evictCosts` name real models.

Resource amounts are in the user's units; the compiler only compares them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_swap.compiler.aliases import AliasTable
from llama_swap.compiler.collect import Collector, Keys, get_map, get_str, type_name
from llama_swap.compiler.plan import Budget, Model, freeze


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def read_amounts(c: Collector, keys: Keys, raw: Any, *, positive: bool) -> dict[str, float]:
    """A mapping of resource name -> amount; bad entries are reported and left out."""
    out: dict[str, float] = {}
    for name, value in get_map(c, keys, raw).items():
        if not _number(value):
            c.error((*keys, name), f"expected a number, got {type_name(value)}")
        elif value < 0 or (positive and value == 0):
            kind = "positive" if positive else "non-negative"
            c.error((*keys, name), f"must be a {kind} number, got {_show(value)}")
        else:
            out[name] = value
    return out


def model_resources(c: Collector, mid: str, raw: Mapping[str, Any]) -> dict[str, float]:
    """A model's declared `resources` (sizes; 0 allowed)."""
    amounts = read_amounts(c, ("models", mid, "resources"), raw.get("resources"), positive=False)
    return {k: amounts[k] for k in sorted(amounts)}


def resolve_budget(c: Collector, keys: Keys, raw: Any, aliases: AliasTable) -> Budget:
    """`routing.router.settings.budget`, checked on its own (the models come later)."""
    b = get_map(c, keys, raw)
    max_loaded = 0
    if b.get("maxLoaded") is not None:
        value = b["maxLoaded"]
        if not isinstance(value, int) or isinstance(value, bool):
            c.error((*keys, "maxLoaded"), f"expected an integer, got {type_name(value)}")
        elif value < 1:
            c.error((*keys, "maxLoaded"), f"must be at least 1, got {value}")
        else:
            max_loaded = value
    resources = read_amounts(c, (*keys, "resources"), b.get("resources"), positive=True)
    if b.get("maxLoaded") is None and not get_map(c, (*keys, "resources"), b.get("resources")):
        c.error(keys, "the budget router needs maxLoaded or resources (or both)")
    probes: dict[str, str] = {}
    for name, command in get_map(c, (*keys, "probes"), b.get("probes")).items():
        text = get_str(c, (*keys, "probes", name), command, "").strip()
        if name not in resources:
            c.error(
                (*keys, "probes", name),
                f"probe for resource '{name}', which budget.resources does not declare",
            )
        elif not text:
            c.error((*keys, "probes", name), "the probe command is empty")
        else:
            probes[name] = text
    costs: dict[str, int] = {}
    for model, cost in get_map(c, (*keys, "evictCosts"), b.get("evictCosts")).items():
        ckeys = (*keys, "evictCosts", model)
        if not isinstance(cost, int) or isinstance(cost, bool) or cost < 1:
            c.error(ckeys, f"evict cost must be a positive integer, got {cost!r}")
        elif model not in aliases.model_ids:
            c.error(ckeys, f"evictCosts names '{model}', which is not a model id")
        else:
            costs[model] = cost
    return Budget(
        maxLoaded=max_loaded,
        resources=freeze({k: resources[k] for k in sorted(resources)}),
        probes=freeze({k: probes[k] for k in sorted(probes)}),
        evictCosts=freeze({k: costs[k] for k in sorted(costs)}),
    )


def check_model_resources(
    c: Collector, budget: Budget | None, models: Mapping[str, Model]
) -> None:
    """Every declared size must name a budget resource and fit its capacity alone.

    Without a budget router the sizes mean nothing: a warning per model says so.
    """
    for mid, model in models.items():
        keys: Keys = ("models", mid, "resources")
        if not model.resources:
            continue
        if budget is None:
            c.warn(keys, "ignored: resources are used only by routing.router.use: budget")
            continue
        for name, amount in model.resources.items():
            capacity = budget.resources.get(name)
            if capacity is None:
                declared = ", ".join(budget.resources) or "none"
                c.error(
                    (*keys, name),
                    f"resource '{name}' is not declared in routing.router.settings.budget."
                    f"resources (declared: {declared})",
                )
            elif amount > capacity:
                c.error(
                    (*keys, name),
                    f"model '{mid}' alone needs {_show(amount)} {name}, more than the budget's "
                    f"capacity of {_show(capacity)}",
                )
