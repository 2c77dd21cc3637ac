"""Peers: remote OpenAI-compatible servers and the models they serve.

A peer gets the *global* macros only (no MODEL_ID, no PORT), and only in
`apiKey`, `filters.stripParams` and `filters.setParams` (type-preserving);
its `proxy` gets environment substitution only.  Peers are emitted sorted by
id, which is also the order the runtime searches them in.
"""

from __future__ import annotations

from typing import Any

from llama_swap.compiler.collect import Collector, Keys, get_list, get_map, get_str, type_name
from llama_swap.compiler.filters import (
    sanitize_set_params,
    sanitize_set_params_by_id,
    sanitize_strip_params,
)
from llama_swap.compiler.macros import (
    Budget,
    ExpansionTooLarge,
    Macro,
    first_leftover,
    leftover_message,
    refs_in,
    substitute_text,
    substitute_value,
)
from llama_swap.compiler.models import proxy_url_problem, read_timeouts
from llama_swap.compiler.plan import Filters, Peer, Timeouts, freeze

PEER_TIMEOUTS = Timeouts(responseHeader=60)


def _message(name: str, field: str, known: list[str]) -> str:
    if name in ("PORT", "MODEL_ID", "PID"):
        return f"unknown macro '${{{name}}}': peers get the global macros only"
    return leftover_message(name, field, known)


def _leftovers(
    c: Collector, keys: Keys, text: str, broken: set[str], field: str, known: list[str]
) -> None:
    for name in dict.fromkeys(refs_in(text)):
        if name not in broken:
            c.error(keys, _message(name, field, known))


def resolve_peer(
    c: Collector, pid: str, raw_value: Any, macros: list[Macro], broken: set[str]
) -> Peer:
    keys: Keys = ("peers", pid)
    raw = get_map(c, keys, raw_value)
    known = [name for name, _ in macros]

    proxy = get_str(c, (*keys, "proxy"), raw.get("proxy"), "")
    if proxy == "":
        c.error((*keys, "proxy"), "proxy is required")
    else:
        problem = proxy_url_problem(proxy)
        if problem:
            c.error((*keys, "proxy"), problem.replace("proxy URL", "peer proxy URL"))

    models: list[str] = []
    for i, m in enumerate(get_list(c, (*keys, "models"), raw.get("models"))):
        if isinstance(m, str) and m:
            models.append(m)
        else:
            c.error((*keys, "models", i), f"expected a model name, got {type_name(m)}")
    if not raw.get("models"):
        c.error((*keys, "models"), "peer models can not be empty")

    filters = get_map(c, (*keys, "filters"), raw.get("filters"))
    api_key = get_str(c, (*keys, "apiKey"), raw.get("apiKey"), "")
    strip = get_str(c, (*keys, "filters", "stripParams"), filters.get("stripParams"), "")
    set_params = get_map(c, (*keys, "filters", "setParams"), filters.get("setParams"))
    try:
        budget = Budget()
        api_key = substitute_text(api_key, macros, budget)
        strip = substitute_text(strip, macros, budget)
        set_params = substitute_value(set_params, macros, budget)
    except ExpansionTooLarge as e:
        c.error(("macros", e.name), e.message())
        broken = broken | set(known)  # the fields stay as written; not reported again
    _leftovers(c, (*keys, "apiKey"), api_key, broken, "apiKey", known)
    _leftovers(c, (*keys, "filters", "stripParams"), strip, broken, "filters.stripParams", known)
    found = first_leftover(set_params)
    if found:
        kind, name = found
        if kind == "env":
            c.error((*keys, "filters", "setParams"), f"environment variable '{name}' not set")
        elif name not in broken:
            c.error((*keys, "filters", "setParams"), _message(name, "filters.setParams", known))

    by_id_raw = get_map(c, (*keys, "filters", "setParamsByID"), filters.get("setParamsByID"))
    by_id = {k: get_map(c, (*keys, "filters", "setParamsByID", k), v) for k, v in by_id_raw.items()}
    return Peer(
        id=pid,
        proxy=proxy,
        apiKey=api_key,
        models=tuple(models),
        filters=Filters(
            stripParams=sanitize_strip_params(strip),
            setParams=freeze(sanitize_set_params(set_params)),
            setParamsByID=freeze(sanitize_set_params_by_id(by_id)),
        ),
        timeouts=read_timeouts(c, (*keys, "timeouts"), raw.get("timeouts"), PEER_TIMEOUTS),
    )
