"""Which model a model-dispatched request is really for: profile pins, then selectors.

The first step of the request policy both front doors share, before `admission.admit`:

1. the active profile: a requested name equal to a pin key becomes the pin's
   target (an empty target leaves no model: 404 `no model id could be identified`);
2. a selector: the (possibly rewritten) name, when it is a selector id and not a
   local model id or alias, becomes the target the selector's strategy picks
   (runtime/core/selectors.py; 503 when none is available).

A local model id or alias wins over a selector of the same name; a selector wins
over a bare peer model name.  The outcome is a plain value: the name to rewrite the
request to (None: unchanged) and the selector choice to release when the request ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.profiles import pin_target
from llama_swap.runtime.core.selectors import Choice, SpilloverCounts, States, choose


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """`rewrite`: the name the request now names (None = as sent; "" = no model)."""

    rewrite: str | None = None
    choice: Choice | None = None  # the selector's pick, to release when the request ends

    @property
    def selector(self) -> str | None:
        return self.choice.selector if self.choice is not None else None


UNCHANGED = ModelChoice()


def choose_model(
    plan: Plan,
    active_profile: str | None,
    requested: str,
    states: States,
    counts: SpilloverCounts,
) -> ModelChoice | RouteError:
    """Apply the active profile's pins, then selectors, to the name a client sent."""
    name = requested
    rewrite: str | None = None
    target = pin_target(plan, active_profile, requested)
    if target is not None:
        if target == "":
            return ModelChoice(rewrite="")
        name = rewrite = target
    if not plan.selectors or plan.resolve(name) is not None:
        return ModelChoice(rewrite=rewrite) if rewrite is not None else UNCHANGED
    selector = plan.selectors.get(name)
    if selector is None:
        return ModelChoice(rewrite=rewrite) if rewrite is not None else UNCHANGED
    picked = choose(plan, selector, states, counts)
    if isinstance(picked, RouteError):
        return picked
    return ModelChoice(rewrite=picked.target, choice=picked)
