"""The routing block: scheduler choice and router (group or matrix) settings.

Legacy top-level `groups`/`matrix` are translated into `routing.router`
(mixing the two styles is an error).  The group router's settings come out
with every local model in exactly one group: models no group lists go to the
implicit group `(default)` (swap, exclusive, not persistent), always present.
The matrix router's sets come out expanded to sorted model-id combinations in
solver order (topological by `+ref`, otherwise definition order), with evict
costs keyed by model id.

Deliberately stricter than the original: group members and matrix vars must
be real model ids (the original fails only when the router is built), and a
user group may not be named `(default)` (the original silently overwrote it).
The scheduler defaults to `serial`; `fifo` takes `settings.fifo.priority`,
whose keys may be ids or aliases and are resolved to ids here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llama_swap.compiler.aliases import AliasTable
from llama_swap.compiler.budget import resolve_budget
from llama_swap.compiler.collect import (
    Collector,
    Keys,
    get_bool,
    get_int,
    get_list,
    get_map,
    get_str,
    type_name,
)
from llama_swap.compiler.matrix_dsl import (
    MAX_COMBINATIONS,
    Combination,
    DSLError,
    Node,
    expand,
    idents_of,
    parse,
    refs_of,
)
from llama_swap.compiler.plan import Budget, Group, Matrix, MatrixSet, Routing, freeze

DEFAULT_GROUP = "(default)"
SCHEDULERS = ("serial", "fifo")
ROUTERS = ("group", "matrix", "budget")
_VAR_KEY = re.compile(r"[a-zA-Z0-9.-]{1,32}")
ROUTER_SETTINGS: Keys = ("routing", "router", "settings")


def _unknown_model(name: str, aliases: AliasTable, what: str) -> str:
    owner = aliases.owner.get(name)
    if owner is not None:
        return f"{what} '{name}' is an alias of model '{owner}'; use the model id"
    return f"{what} '{name}' is not a model id"


# --- groups -----------------------------------------------------------------


def resolve_groups(
    c: Collector, prefix: Keys, raw_groups: Any, aliases: AliasTable
) -> dict[str, Group]:
    """Groups with defaults, membership checks and the explicit default group."""
    groups: dict[str, Group] = {}
    used: dict[str, str] = {}
    for gname, raw in get_map(c, prefix, raw_groups).items():
        gkeys = (*prefix, gname)
        if gname == DEFAULT_GROUP:
            c.error(gkeys, f"the group name '{DEFAULT_GROUP}' is reserved for models in no group")
            continue
        g = get_map(c, gkeys, raw)
        members: list[str] = []
        for i, m in enumerate(get_list(c, (*gkeys, "members"), g.get("members"))):
            mkeys = (*gkeys, "members", i)
            if not isinstance(m, str):
                c.error(mkeys, f"expected a model id, got {type_name(m)}")
            elif m in members:
                c.error(mkeys, f"duplicate model member {m} found in group: {gname}")
            elif m in used:
                c.error(
                    mkeys, f"model member {m} is used in multiple groups: {used[m]} and {gname}"
                )
            elif m not in aliases.model_ids:
                c.error(mkeys, _unknown_model(m, aliases, "group member"))
            else:
                members.append(m)
                used[m] = gname
        groups[gname] = Group(
            name=gname,
            members=tuple(members),
            swap=get_bool(c, (*gkeys, "swap"), g.get("swap"), True),
            exclusive=get_bool(c, (*gkeys, "exclusive"), g.get("exclusive"), True),
            persistent=get_bool(c, (*gkeys, "persistent"), g.get("persistent"), False),
        )
    groups[DEFAULT_GROUP] = Group(
        name=DEFAULT_GROUP,
        members=tuple(sorted(m for m in aliases.model_ids if m not in used)),
    )
    return {name: groups[name] for name in sorted(groups)}


# --- matrix -----------------------------------------------------------------


def _topological(
    order: list[str], deps: dict[str, list[str]], c: Collector, skeys: Keys
) -> tuple[list[str], set[str]]:
    """Sets in dependency order (definition order otherwise) and the sets caught in a cycle."""
    state: dict[str, int] = {}
    out: list[str] = []
    failed: set[str] = set()

    def visit(name: str) -> bool:
        if name not in deps:  # an undefined or unparsable set: reported already
            return False
        if state.get(name) == 1:
            c.error((*skeys, name), f'circular reference detected involving set "{name}"')
            return False
        if state.get(name) == 2:
            return name not in failed
        state[name] = 1
        ok = all([visit(dep) for dep in deps.get(name, [])])
        state[name] = 2
        if ok:
            out.append(name)
        else:
            failed.add(name)
        return ok

    for name in order:
        if name not in state:
            visit(name)
    return out, failed


def _read_vars(
    c: Collector, prefix: Keys, raw_vars: dict[str, Any], aliases: AliasTable
) -> dict[str, str]:
    """Var id -> model id; a bad entry is reported and kept, so sets using it are not blamed."""
    variables: dict[str, str] = {}
    for key, model in raw_vars.items():
        vkeys = (*prefix, "vars", key)
        if not _VAR_KEY.fullmatch(key):
            c.error(
                vkeys,
                f'var key "{key}" must contain only alphanumeric, \'-\' or \'.\' characters '
                "and be 1-32 characters long",
            )
        elif not isinstance(model, str) or model not in aliases.model_ids:
            c.error(
                vkeys,
                f'var key "{key}" references unknown model "{model}"'
                + (
                    f" (an alias of '{aliases.owner[model]}'; use the model id)"
                    if isinstance(model, str) and model in aliases.owner
                    else ""
                ),
            )
        variables[key] = str(model)
    return variables


def _read_costs(
    c: Collector,
    prefix: Keys,
    raw_costs: dict[str, Any],
    variables: dict[str, str],
    aliases: AliasTable,
) -> dict[str, int]:
    """Evict costs keyed by var id or model id in the config (a var wins), by model id in the plan."""
    costs: dict[str, int] = {}
    for key, cost in raw_costs.items():
        ckeys = (*prefix, "evict_costs", key)
        value = get_int(c, ckeys, cost, 1)
        if value <= 0:
            c.error(ckeys, f'evict_cost for "{key}" must be a positive integer, got {value}')
        elif key in variables:
            costs[variables[key]] = value
        elif key in aliases.model_ids:
            costs[key] = value
        else:
            c.error(ckeys, f'evict_costs: unknown var or model "{key}"')
    return costs


@dataclass
class _ParsedSets:
    """The matrix sets after parsing, before expansion."""

    trees: dict[str, Node] = field(default_factory=dict)
    deps: dict[str, list[str]] = field(default_factory=dict)  # set -> the sets it references
    texts: dict[str, str] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # reported; not expanded


def _parse_sets(
    c: Collector,
    skeys: Keys,
    raw_sets: dict[str, Any],
    raw_vars: dict[str, Any],
    aliases: AliasTable,
) -> _ParsedSets:
    """Parse every set and check its names: referenced sets exist, leaves are vars or model ids."""
    out = _ParsedSets()
    for name, dsl in raw_sets.items():
        out.texts[name] = get_str(c, (*skeys, name), dsl, "")
        try:
            tree = out.trees[name] = parse(out.texts[name])
        except DSLError as e:
            c.error((*skeys, name), str(e))
            out.broken.add(name)
            continue
        out.deps[name] = refs_of(tree)
        for ref in out.deps[name]:
            if ref not in raw_sets:
                c.error((*skeys, name), f'set "{name}" references undefined set "{ref}"')
                out.broken.add(name)
        for leaf in idents_of(tree):
            if leaf.name not in raw_vars and leaf.name not in aliases.model_ids:
                hint = (
                    f" (an alias of '{aliases.owner[leaf.name]}'; use the model id or a var)"
                    if leaf.name in aliases.owner
                    else ""
                )
                c.error(
                    (*skeys, name),
                    f'unknown var or model "{leaf.name}" at position {leaf.pos}{hint}',
                )
                out.broken.add(name)
    return out


def _expand_sets(
    c: Collector, skeys: Keys, order: list[str], parsed: _ParsedSets, variables: dict[str, str]
) -> list[MatrixSet]:
    """Expand the sets in solver order into sorted model-id combinations, within the limit."""
    expanded: dict[str, list[Combination]] = {}
    sets: list[MatrixSet] = []
    total = 0
    for name in order:
        deps = parsed.deps.get(name, [])
        if name in parsed.broken or any(dep not in expanded for dep in deps):
            continue
        try:
            combos = expand(parsed.trees[name], expanded)
        except DSLError as e:
            c.error((*skeys, name), str(e))
            continue
        expanded[name] = combos
        total += len(combos)
        real = tuple(
            dict.fromkeys(tuple(sorted({variables.get(v, v) for v in combo})) for combo in combos)
        )
        sets.append(MatrixSet(name=name, dsl=parsed.texts[name], combinations=real))
    if total > MAX_COMBINATIONS:
        c.error(
            skeys,
            f"total expanded combinations ({total}) exceed {MAX_COMBINATIONS} "
            "(a guard against running out of memory)",
        )
    return sets


def resolve_matrix(
    c: Collector, prefix: Keys, raw_matrix: Any, aliases: AliasTable
) -> Matrix | None:
    """Validate and expand a matrix; None when anything is wrong (errors reported)."""
    n_errors = len(c.errors)
    m = get_map(c, prefix, raw_matrix)
    raw_vars = get_map(c, (*prefix, "vars"), m.get("vars"))
    raw_costs = get_map(c, (*prefix, "evict_costs"), m.get("evict_costs"))
    raw_sets = get_map(c, (*prefix, "sets"), m.get("sets"))
    if not raw_sets:
        c.error(prefix, "matrix must define at least one set")

    variables = _read_vars(c, prefix, raw_vars, aliases)
    costs = _read_costs(c, prefix, raw_costs, variables, aliases)
    skeys = (*prefix, "sets")
    parsed = _parse_sets(c, skeys, raw_sets, raw_vars, aliases)
    order, _cyclic = _topological(list(raw_sets), parsed.deps, c, skeys)
    sets = _expand_sets(c, skeys, order, parsed, variables)

    if len(c.errors) > n_errors:
        return None
    return Matrix(
        vars=freeze({k: variables[k] for k in sorted(variables)}),
        evictCosts=freeze({k: costs[k] for k in sorted(costs)}),
        sets=tuple(sets),
    )


# --- the block --------------------------------------------------------------


def _budget_router(
    c: Collector, settings: dict[str, Any], aliases: AliasTable
) -> tuple[str, dict[str, Group], Matrix | None, Budget | None]:
    if settings.get("budget") is None:
        c.error(
            ("routing", "router", "use"),
            "routing.router.use is 'budget' but routing.router.settings.budget is not set",
        )
        return "budget", {}, None, Budget(maxLoaded=1)
    for other in ("groups", "matrix"):
        if settings.get(other):
            c.warn((*ROUTER_SETTINGS, other), "ignored: routing.router.use is 'budget'")
    keys = (*ROUTER_SETTINGS, "budget")
    return "budget", {}, None, resolve_budget(c, keys, settings["budget"], aliases)


def _router(
    c: Collector, doc: dict[str, Any], routing: dict[str, Any], aliases: AliasTable
) -> tuple[str, dict[str, Group], Matrix | None, Budget | None]:
    legacy_groups = get_map(c, ("groups",), doc.get("groups"))
    legacy_matrix = doc.get("matrix")
    router = get_map(c, ("routing", "router"), routing.get("router"))
    use = get_str(c, ("routing", "router", "use"), router.get("use"), "")
    settings = get_map(c, ROUTER_SETTINGS, router.get("settings"))
    has_legacy = legacy_matrix is not None or bool(legacy_groups)
    has_routing = use != "" or settings.get("matrix") is not None or bool(settings.get("groups"))

    if has_legacy and has_routing:
        c.error(
            ("matrix",) if legacy_matrix is not None else ("groups",),
            "config uses both the legacy top-level 'matrix'/'groups' keys and the 'routing.router' "
            "block; please migrate the top-level keys into 'routing.router' and remove them",
        )
    elif has_legacy:
        if legacy_matrix is not None and legacy_groups:
            c.error(("matrix",), "config cannot use both 'groups' and 'matrix'")
        elif legacy_matrix is not None:
            return "matrix", {}, resolve_matrix(c, ("matrix",), legacy_matrix, aliases), None
        return "group", resolve_groups(c, ("groups",), legacy_groups, aliases), None, None

    if use == "budget":
        return _budget_router(c, settings, aliases)

    if use == "matrix":
        if settings.get("matrix") is None:
            c.error(
                ("routing", "router", "use"),
                "routing.router.use is 'matrix' but routing.router.settings.matrix is not set",
            )
            return "matrix", {}, None, None
        if settings.get("groups"):
            c.warn((*ROUTER_SETTINGS, "groups"), "ignored: routing.router.use is 'matrix'")
        return (
            "matrix",
            {},
            resolve_matrix(c, (*ROUTER_SETTINGS, "matrix"), settings["matrix"], aliases),
            None,
        )
    if use not in ("", "group"):
        c.error(
            ("routing", "router", "use"), f'unknown router "{use}" (valid: group, matrix, budget)'
        )
    elif settings.get("matrix") is not None:
        c.warn(
            (*ROUTER_SETTINGS, "matrix"),
            "ignored: routing.router.use is not 'matrix' (set use: matrix to enable the matrix router)",
        )
    return (
        "group",
        resolve_groups(c, (*ROUTER_SETTINGS, "groups"), settings.get("groups"), aliases),
        None,
        None,
    )


def _warn_serial_ignores_router(
    c: Collector, doc: dict[str, Any], router: str, groups: dict[str, Group]
) -> None:
    """The serial scheduler evicts every other model; groups, the matrix and the budget only
    matter to fifo."""
    if router == "budget":
        c.warn(
            ("routing", "router", "use"),
            "the budget router has no effect with the serial scheduler, which keeps one model "
            "loaded at a time; set routing.scheduler.use: fifo to use it",
        )
        return
    if router == "group" and not any(name != DEFAULT_GROUP for name in groups):
        return
    if doc.get("groups") or doc.get("matrix") is not None:
        keys: Keys = ("matrix",) if doc.get("matrix") is not None else ("groups",)
    else:
        keys = (*ROUTER_SETTINGS, "matrix" if router == "matrix" else "groups")
    what = "the matrix" if router == "matrix" else "groups"
    c.warn(
        keys,
        f"{what} {'has' if router == 'matrix' else 'have'} no effect with the serial scheduler, which runs one model at a time; "
        "set routing.scheduler.use: fifo to use them",
    )


def resolve_routing(c: Collector, doc: dict[str, Any], aliases: AliasTable) -> Routing:
    routing = get_map(c, ("routing",), doc.get("routing"))
    router, groups, matrix, budget = _router(c, doc, routing, aliases)

    sched = get_map(c, ("routing", "scheduler"), routing.get("scheduler"))
    use = get_str(c, ("routing", "scheduler", "use"), sched.get("use"), "") or "serial"
    if use not in SCHEDULERS:
        c.error(("routing", "scheduler", "use"), f'unknown scheduler "{use}" (valid: serial, fifo)')
    pkeys: Keys = ("routing", "scheduler", "settings", "fifo", "priority")
    settings = get_map(c, pkeys[:3], sched.get("settings"))
    fifo = get_map(c, pkeys[:4], settings.get("fifo"))
    raw_priority = get_map(c, pkeys, fifo.get("priority"))
    priority: dict[str, int] = {}
    given_as: dict[str, str] = {}
    for key, value in raw_priority.items():
        model = aliases.resolve(key)
        number = get_int(c, (*pkeys, key), value, 0)
        if model is None:
            c.error(
                (*pkeys, key),
                f'routing.scheduler.settings.fifo.priority references unknown model "{key}"',
            )
        elif model in priority:
            c.error(
                (*pkeys, key),
                f"model '{model}' is given a priority twice ('{given_as[model]}' and '{key}')",
            )
        else:
            priority[model] = number
            given_as[model] = key
    if use == "serial":
        _warn_serial_ignores_router(c, doc, router, groups)
    if raw_priority and use == "serial":
        c.warn(pkeys, "has no effect with the serial scheduler (set routing.scheduler.use: fifo)")
    max_wait = _max_wait(c, fifo.get("maxWait"), use)
    return Routing(
        scheduler=use if use in SCHEDULERS else "serial",
        priority=freeze({k: priority[k] for k in sorted(priority)}),
        router=router,
        groups=freeze(groups) if router == "group" else freeze({}),
        matrix=matrix,
        budget=budget,
        maxWait=max_wait,
    )


def _max_wait(c: Collector, value: Any, use: str) -> float:
    """`routing.scheduler.settings.fifo.maxWait`: seconds, 0 (the default) turns it off."""
    keys: Keys = ("routing", "scheduler", "settings", "fifo", "maxWait")
    if value is None:
        return 0
    if not isinstance(value, int | float) or isinstance(value, bool):
        c.error(keys, f"expected a number of seconds, got {type_name(value)}")
        return 0
    if value < 0:
        c.error(keys, f"must be 0 (off) or a positive number of seconds, got {value}")
        return 0
    if value > 0 and use == "serial":
        c.warn(keys, "has no effect with the serial scheduler, which serves in arrival order")
    return value
