"""`selectors`: virtual model ids that pick one of their targets per request.

```yaml
selectors:
  coder:
    strategy: spillover      # warm | pin | spillover
    targets: [a, b, remote/c]
    settings: {spillover: 2}
```

Checked as the Go original checks them (messages under `selectors.<id>`), in
the order it does: the id against model ids and aliases, the strategy, the
targets (no chaining, each must resolve through `NameSpace.resolve_base`;
`warm` needs local targets), and for `spillover` the setting, duplicates and
whether the local targets can run together at all (one group with
`swap: false`, or one matrix combination holding them all), since spilling
to a second model that evicts the first would only thrash.

The plan keeps each target as written (what a request is rewritten to) and
what it resolved to (a local model id or a peer model's full name).
"""

from __future__ import annotations

from typing import Any

from llama_swap.compiler.collect import (
    Collector,
    Keys,
    get_bool,
    get_int,
    get_list,
    get_map,
    get_str,
)
from llama_swap.compiler.namespaces import NameSpace
from llama_swap.compiler.plan import SELECTOR_STRATEGIES, Routing, Selector, freeze


def _co_residence(c: Collector, keys: Keys, sid: str, local: list[str], routing: Routing) -> None:
    """Several local spillover targets must be able to run at the same time."""
    if len(local) < 2:
        return
    if routing.router == "matrix" and routing.matrix is not None:
        wanted = set(local)
        for s in routing.matrix.sets:
            if any(wanted <= set(combo) for combo in s.combinations):
                return
        c.error(
            (*keys, "targets"),
            "targets must all appear together in one expanded matrix set",
        )
        return
    groups: dict[str, str] = {}
    for name, group in routing.groups.items():
        for member in group.members:
            groups[member] = name
    for model in local:
        if model not in groups:
            c.error((*keys, "targets"), f'target "{model}" is not in a routing group')
            return
    shared = {groups[m] for m in local}
    if len(shared) > 1:
        c.error((*keys, "targets"), "spillover targets must share one routing group")
    elif routing.groups[shared.pop()].swap:
        c.error((*keys, "targets"), "spillover targets must share a group with swap: false")


def _targets(
    c: Collector, keys: Keys, strategy: str, raw: Any, names: NameSpace, selector_ids: set[str]
) -> tuple[list[str], list[str]]:
    targets: list[str] = []
    resolved: list[str] = []
    for i, t in enumerate(get_list(c, (*keys, "targets"), raw)):
        tkeys = (*keys, "targets", i)
        target = get_str(c, tkeys, t, "")
        if target in selector_ids:
            c.error(
                tkeys,
                f'references selector "{target}"; selector chaining is not supported',
            )
            continue
        base = names.resolve_base(target)
        if base is None:
            c.error(tkeys, f'references unknown model "{target}"')
            continue
        if strategy == "warm" and not names.is_local(target):
            c.error(tkeys, 'must resolve to a local model for strategy "warm"')
            continue
        targets.append(target)
        resolved.append(base)
    return targets, resolved


def _one(
    c: Collector, sid: str, raw_value: Any, names: NameSpace, ids: set[str], routing: Routing
) -> Selector | None:
    keys: Keys = ("selectors", sid)
    n_errors = len(c.errors)
    raw = get_map(c, keys, raw_value)
    if sid.strip() == "":
        c.error(keys, "selector names cannot be empty")
        return None
    if sid in names.aliases.model_ids:
        c.error(keys, f'name conflicts with model ID "{sid}"')
        return None
    if sid in names.aliases.owner:
        c.error(keys, f'name conflicts with model alias "{sid}"')
        return None
    strategy = get_str(c, (*keys, "strategy"), raw.get("strategy"), "")
    if strategy == "":
        c.error((*keys, "strategy"), "strategy is required")
    elif strategy not in SELECTOR_STRATEGIES:
        c.error(
            (*keys, "strategy"),
            f'unknown strategy "{strategy}" (valid: {", ".join(SELECTOR_STRATEGIES)})',
        )
    if not raw.get("targets"):
        c.error((*keys, "targets"), "targets must contain at least one entry")
    targets, resolved = _targets(c, keys, strategy, raw.get("targets"), names, ids)
    settings = get_map(c, (*keys, "settings"), raw.get("settings"))
    spillover = get_int(c, (*keys, "settings", "spillover"), settings.get("spillover"), 1)
    if strategy == "spillover":
        if spillover < 1:
            c.error((*keys, "settings", "spillover"), "must be >= 1")
        seen: set[str] = set()
        for r in resolved:
            if r in seen:
                c.error((*keys, "targets"), f'contains duplicate resolved model "{r}"')
                break
            seen.add(r)
        local = [r for t, r in zip(targets, resolved, strict=True) if names.is_local(t)]
        _co_residence(c, keys, sid, list(dict.fromkeys(local)), routing)
    if len(c.errors) > n_errors:
        return None
    return Selector(
        id=sid,
        strategy=strategy,
        targets=tuple(targets),
        resolved=tuple(resolved),
        name=get_str(c, (*keys, "name"), raw.get("name"), "").strip(),
        description=get_str(c, (*keys, "description"), raw.get("description"), "").strip(),
        unlisted=get_bool(c, (*keys, "unlisted"), raw.get("unlisted"), False),
        metadata=freeze(get_map(c, (*keys, "metadata"), raw.get("metadata"))),
        spillover=max(spillover, 1),
    )


def resolve_selectors(
    c: Collector, raw: Any, names: NameSpace, routing: Routing
) -> dict[str, Selector]:
    """Every valid selector by id (sorted); problems reported."""
    raw_map = get_map(c, ("selectors",), raw)
    ids = set(raw_map)
    out: dict[str, Selector] = {}
    for sid in raw_map:
        sel = _one(c, sid, raw_map[sid], names, ids, routing)
        if sel is not None:
            out[sid] = sel
    return {sid: out[sid] for sid in sorted(out)}
