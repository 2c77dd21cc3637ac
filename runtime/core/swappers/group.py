"""The group eviction policy: which running models a target's group pushes out.

Pure and stateless after construction.  Every model belongs to exactly one
group (the compiler makes the implicit "(default)" group explicit; a model the
plan's groups do not list is treated as a member of that default group, whose
settings are swap/exclusive on, persistent off).  For a target in group `tg`,
each running model `m` other than the target is decided by this table (the Go
original's `groupSwapper`, kept as it is so configs written for it evict the same
models):

| m is ...                                   | tg.swap | tg.exclusive | m's group persistent | action |
|--------------------------------------------|---------|--------------|----------------------|--------|
| in tg                                      | true    | -            | -                    | evict  |
| in tg                                      | false   | -            | -                    | keep   |
| in another group                           | -       | true         | false                | evict  |
| in another group                           | -       | true         | true                 | keep   |
| in another group                           | -       | false        | -                    | keep   |

The last row is a kept quirk: a non-exclusive target leaves even exclusive
groups running.  `persistent` only protects a group from *other* groups.

Pinned models (`EvictionContext.pinned`) are treated like members of a
persistent group: another group's exclusive target keeps them.  A pinned model
in the target's own group with `swap: true` has no alternative (the group says
the two never run together, and the request must be served), so it is evicted
and its log line says it was pinned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from llama_swap.compiler.plan import Group
from llama_swap.runtime.core.schedulers.base import Evicted, Eviction, EvictionContext

DEFAULT_GROUP = "(default)"


def format_list(items: Sequence[str]) -> str:
    """Render a list the way the Go original's `%v` does: `[a b c]`."""
    return "[" + " ".join(items) + "]"


class GroupSwapper:
    """`Swapper` for `routing.router.use: group`."""

    def __init__(self, groups: Mapping[str, Group], models: Iterable[str] = ()) -> None:
        self._groups: dict[str, Group] = dict(groups)
        self._group_of: dict[str, str] = {}
        for name, group in self._groups.items():
            for member in group.members:
                self._group_of.setdefault(member, name)
        orphans = tuple(sorted(m for m in models if m not in self._group_of))
        if DEFAULT_GROUP not in self._groups:
            self._groups[DEFAULT_GROUP] = Group(name=DEFAULT_GROUP, members=orphans)
        for model in orphans:
            self._group_of[model] = DEFAULT_GROUP

    def group_of(self, model: str) -> Group:
        """The model's group; an unlisted model is a member of the default group."""
        return self._groups[self._group_of.get(model, DEFAULT_GROUP)]

    def eviction_for(
        self, target: str, running: Sequence[str], pinned: frozenset[str] = frozenset()
    ) -> tuple[str, ...]:
        tg = self.group_of(target)
        evict: list[str] = []
        for model in running:
            if model == target or model in evict:
                continue
            other = self.group_of(model)
            if other.name == tg.name:
                if tg.swap:
                    evict.append(model)
            elif tg.exclusive and not other.persistent and model not in pinned:
                evict.append(model)
        return tuple(evict)

    def decide(self, target: str, ctx: EvictionContext) -> Eviction:
        evict = self.eviction_for(target, ctx.running, ctx.pinned)
        group = self.group_of(target).name
        notes = []
        for model in evict:
            how = "same group, swap" if self.group_of(model).name == group else "exclusive"
            pin = ", pinned but no alternative" if model in ctx.pinned else ""
            notes.append(
                Evicted(model, "group", f"group {group} ({how}{pin}): evicting {model} for {target}")
            )
        return Eviction(tuple(notes), line=self.describe(target, ctx.running, ctx.pinned))

    def describe(
        self, target: str, running: Sequence[str], pinned: frozenset[str] = frozenset()
    ) -> str:
        evict = self.eviction_for(target, running, pinned)
        group = self.group_of(target).name
        if evict:
            return f"group: model={target} group={group} evict={format_list(evict)}"
        if not running:
            return f"group: model={target} group={group} starting (no models running)"
        return f"group: model={target} group={group} running alongside {format_list(running)}"
