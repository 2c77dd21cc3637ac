"""Per-model resolution: macros, cleaning, defaults and checks.

Runs in two passes around port allocation (`compiler.ports`), because
`${PORT}` is looked for only after ordinary macros are expanded:

1. `prepare`: read the model's text fields with their defaults, drop comment
   lines from `cmd`/`cmdStop`, validate model macros, merge them with the
   globals and substitute (LIFO; typed in `metadata` and `setParamsByID`).
2. `finish`: report leftover macros by field, validate capabilities, register
   `setParamsByID` aliases, check the proxy URL, split the commands into argv,
   sanitise filters, and resolve ttl, concurrencyLimit, sendLoadingState and
   timeouts into a frozen `compiler.plan.Model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from llama_swap.compiler.aliases import AliasTable, register_set_params_by_id
from llama_swap.compiler.budget import model_resources
from llama_swap.compiler.collect import (
    Collector,
    Keys,
    get_bool,
    get_int,
    get_list,
    get_map,
    get_str,
)
from llama_swap.compiler.commands import EmptyCommand, command_argv, go_trim, strip_comments
from llama_swap.compiler.filters import (
    sanitize_set_params,
    sanitize_set_params_by_id,
    sanitize_strip_params,
)
from llama_swap.compiler.gotext import format_value
from llama_swap.compiler.macros import (
    Budget,
    ExpansionTooLarge,
    Macro,
    first_leftover,
    leftover_message,
    merge_macros,
    read_macros,
    refs_in,
    substitute_text,
    substitute_value,
)
from llama_swap.compiler.plan import Capabilities, Filters, Model, Settings, Timeouts, freeze

DEFAULT_PROXY = "http://localhost:${PORT}"
DEFAULT_CHECK_ENDPOINT = "/health"
DEFAULT_TTL = -1
DEFAULT_CONCURRENCY_LIMIT = 10
MODALITIES = ("text", "audio", "image")
# The text fields that get macros, in the order leftovers are reported.
TEXT_FIELDS = (
    "cmd",
    "cmdStop",
    "proxy",
    "checkEndpoint",
    "filters.stripParams",
    "name",
    "description",
)


@dataclass
class ModelDraft:
    """A model between the passes: text fields after macro substitution."""

    id: str
    raw: dict[str, Any]
    text: dict[str, str]
    set_params_by_id: dict[str, Any]
    metadata: dict[str, Any]
    macro_names: list[str] = field(default_factory=list)
    broken_macros: set[str] = field(default_factory=set)
    port: int | None = None
    # Fields already reported by the port stage; later checks skip them.
    reported: set[str] = field(default_factory=set)
    # What compiler.session's cache filed this draft under (None when not cached).
    cache_key: object = None


def _field_keys(mid: str, name: str) -> Keys:
    return ("models", mid, *name.split("."))


def _strip_params_source(c: Collector, mid: str, filters: dict[str, Any]) -> str:
    text = get_str(c, _field_keys(mid, "filters.stripParams"), filters.get("stripParams"), "")
    if text == "":
        text = get_str(c, _field_keys(mid, "filters.strip_params"), filters.get("strip_params"), "")
    return text


def prepare(
    c: Collector,
    mid: str,
    raw_value: Any,
    global_macros: list[Macro],
    broken_globals: set[str],
) -> ModelDraft:
    """Pass 1: defaults, comment stripping and macro substitution for one model."""
    raw = get_map(c, ("models", mid), raw_value)
    filters = get_map(c, ("models", mid, "filters"), raw.get("filters"))

    def read(name: str, default: str = "") -> str:
        return get_str(c, ("models", mid, name), raw.get(name), default)

    text = {
        "cmd": strip_comments(read("cmd")),
        "cmdStop": strip_comments(read("cmdStop")),
        "proxy": read("proxy", DEFAULT_PROXY),
        "checkEndpoint": read("checkEndpoint", DEFAULT_CHECK_ENDPOINT),
        "filters.stripParams": _strip_params_source(c, mid, filters),
        "name": read("name"),
        "description": read("description"),
    }
    by_id_raw = get_map(c, _field_keys(mid, "filters.setParamsByID"), filters.get("setParamsByID"))
    metadata = get_map(c, ("models", mid, "metadata"), raw.get("metadata"))

    model_macros, broken = read_macros(
        c, ("models", mid, "macros"), get_map(c, ("models", mid, "macros"), raw.get("macros"))
    )
    merged = merge_macros(mid, global_macros, model_macros)
    draft = ModelDraft(
        id=mid,
        raw=raw,
        text=text,
        set_params_by_id={},
        metadata=metadata,
        macro_names=[name for name, _ in merged],
        broken_macros=broken_globals | broken,
    )
    try:
        _substitute(c, draft, merged, by_id_raw)
    except ExpansionTooLarge as e:
        own = {name for name, _ in model_macros}
        where = ("models", mid, "macros", e.name) if e.name in own else ("macros", e.name)
        c.error(where if e.name != "MODEL_ID" else ("models", mid), e.message())
        # Keep the fields as written; their macros are not reported again.
        draft.text, draft.metadata, draft.set_params_by_id = text, metadata, {}
        draft.broken_macros |= set(draft.macro_names)
        draft.reported |= set(TEXT_FIELDS)
    return draft


def _substitute(
    c: Collector, d: ModelDraft, merged: list[Macro], by_id_raw: dict[str, Any]
) -> None:
    """Macro substitution into the draft's fields, charged to one budget for the whole model."""
    budget = Budget()
    d.text = {k: substitute_text(v, merged, budget) for k, v in d.text.items()}
    origin: dict[str, str] = {}
    for key, params in by_id_raw.items():
        new_key = substitute_text(key, merged, budget)
        pkeys = (*_field_keys(d.id, "filters.setParamsByID"), key)
        if new_key in d.set_params_by_id:
            c.error(
                pkeys,
                f"keys '{origin[new_key]}' and '{key}' both become '{new_key}' after macro substitution",
            )
            continue
        origin[new_key] = key
        d.set_params_by_id[new_key] = substitute_value(get_map(c, pkeys, params), merged, budget)
    d.metadata = substitute_value(d.metadata, merged, budget)


def _check_leftovers(c: Collector, d: ModelDraft) -> None:
    for fname in TEXT_FIELDS:
        if fname in d.reported:
            continue
        for name in dict.fromkeys(refs_in(d.text[fname])):
            if name == "PID" and fname == "cmdStop":
                continue
            if name not in d.broken_macros:
                c.error(_field_keys(d.id, fname), leftover_message(name, fname, d.macro_names))
    found = first_leftover(d.metadata)
    if found:
        _report_nested(c, ("models", d.id, "metadata"), found, "metadata", d)
    for key, params in d.set_params_by_id.items():
        pkeys = (*_field_keys(d.id, "filters.setParamsByID"), key)
        for name in dict.fromkeys(refs_in(key)):
            if name not in d.broken_macros:
                c.error(pkeys, leftover_message(name, "filters.setParamsByID key", d.macro_names))
        found = first_leftover(params)
        if found:
            _report_nested(c, pkeys, found, "filters.setParamsByID", d)


# Fields whose leftovers `_check_leftovers` reports, or that are reported elsewhere.
_CHECKED_ELSEWHERE = frozenset(
    {"cmd", "cmdStop", "proxy", "checkEndpoint", "name", "description", "metadata", "macros"}
)


def _check_runtime_leftovers(c: Collector, d: ModelDraft) -> None:
    """`${PORT}` or `${PID}` left in the other fields (macros were checked before the schema)."""
    for key, value in d.raw.items():
        if key in _CHECKED_ELSEWHERE:
            continue
        if key == "filters" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in ("setParamsByID", "stripParams")}
        found = first_leftover(value)
        if found and found[0] == "macro" and found[1] in ("PORT", "PID"):
            c.error(("models", d.id, key), leftover_message(found[1], key, d.macro_names))


def _report_nested(
    c: Collector, keys: Keys, found: tuple[str, str], fname: str, d: ModelDraft
) -> None:
    kind, name = found
    if kind == "env":
        c.error(keys, f"environment variable '{name}' not set")
    elif name not in d.broken_macros:
        c.error(keys, leftover_message(name, fname, d.macro_names))


def _capabilities(c: Collector, mid: str, raw: Any) -> Capabilities:
    keys: Keys = ("models", mid, "capabilities")
    caps = get_map(c, keys, raw)
    lists: dict[str, tuple[str, ...]] = {}
    for direction in ("in", "out"):
        items = []
        for i, m in enumerate(get_list(c, (*keys, direction), caps.get(direction))):
            if m not in MODALITIES:
                c.error(
                    (*keys, direction, i),
                    f"capabilities.{direction}: invalid modality {format_value(m)!r}, "
                    "must be one of: text, audio, image",
                )
            else:
                items.append(m)
        lists[direction] = tuple(items)
    context = get_int(c, (*keys, "context"), caps.get("context"), 0)
    if context < 0:
        c.error((*keys, "context"), "capabilities.context: must be >= 0")
        context = 0
    return Capabilities(
        in_=lists["in"],
        out=lists["out"],
        tools=get_bool(c, (*keys, "tools"), caps.get("tools"), False),
        reranker=get_bool(c, (*keys, "reranker"), caps.get("reranker"), False),
        context=context,
    )


def proxy_url_problem(url: str) -> str | None:
    """Why `url` is not usable as an upstream base URL, or None."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as e:
        return f"invalid proxy URL {url!r}: {e}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"invalid proxy URL {url!r}: must be an absolute http:// or https:// URL with a host"
    return None


_TIMEOUT_NAMES = tuple(f.name for f in fields(Timeouts))


def read_timeouts(c: Collector, keys: Keys, raw: Any, default: Timeouts) -> Timeouts:
    t = get_map(c, keys, raw)
    values = {}
    for name in _TIMEOUT_NAMES:
        v = get_int(c, (*keys, name), t.get(name), getattr(default, name))
        if v < 0:
            c.error((*keys, name), f"timeout must be >= 0 seconds, got {v}")
            v = getattr(default, name)
        values[name] = v
    return Timeouts(**values)


def _argv(c: Collector, keys: Keys, text: str, *, required: bool) -> tuple[str, ...] | None:
    try:
        return tuple(command_argv(text))
    except EmptyCommand:
        if required:
            c.error(keys, "empty command (nothing left after removing comment lines)")
        return None


def finish(c: Collector, d: ModelDraft, settings: Settings, aliases: AliasTable) -> Model:
    """Pass 2: checks and final values for one model (after port allocation)."""
    capabilities = finish_checks(c, d)
    register_set_params_by_id(c, aliases, d.id, d.set_params_by_id)
    return build_model(c, d, settings, capabilities, tuple(aliases.by_model.get(d.id, ())))


def finish_checks(c: Collector, d: ModelDraft) -> Capabilities:
    """The part of pass 2 before setParamsByID aliases are registered (model-local)."""
    _check_leftovers(c, d)
    _check_runtime_leftovers(c, d)
    return _capabilities(c, d.id, d.raw.get("capabilities"))


def _check_proxy(c: Collector, d: ModelDraft) -> None:
    """Report an unusable proxy URL, unless a leftover macro in it was reported already."""
    problem = proxy_url_problem(d.text["proxy"])
    if problem and "proxy" not in d.reported and not refs_in(d.text["proxy"]):
        c.error(_field_keys(d.id, "proxy"), problem)


def _ttl(c: Collector, mid: str, raw: dict[str, Any], settings: Settings) -> int:
    """The model's ttl with globalTTL applied (-1, the default, means "use globalTTL")."""
    ttl = get_int(c, ("models", mid, "ttl"), raw.get("ttl"), DEFAULT_TTL)
    if ttl == DEFAULT_TTL:
        return settings.globalTTL
    if ttl < DEFAULT_TTL:
        c.error(
            ("models", mid, "ttl"),
            f"invalid TTL value {ttl} (use -1 for globalTTL, 0 to never unload)",
        )
        return settings.globalTTL
    return ttl


def _unload_timeout(c: Collector, mid: str, raw: dict[str, Any], settings: Settings) -> int:
    """The model's graceful-stop window; 0 or absent means the global unloadTimeout."""
    value = get_int(c, ("models", mid, "unloadTimeout"), raw.get("unloadTimeout"), 0)
    if value < 0:
        c.error(("models", mid, "unloadTimeout"), f"invalid unloadTimeout value {value}")
    return value if value > 0 else settings.unloadTimeout


def _concurrency_limit(c: Collector, mid: str, raw: dict[str, Any]) -> int:
    """concurrencyLimit (0 or less means the default); warns about a per-model health timeout."""
    limit = get_int(c, ("models", mid, "concurrencyLimit"), raw.get("concurrencyLimit"), 0)
    if "healthCheckTimeout" in raw:
        c.warn(
            ("models", mid, "healthCheckTimeout"),
            "ignored: the global healthCheckTimeout applies to every model",
        )
    return limit if limit > 0 else DEFAULT_CONCURRENCY_LIMIT


def _set_params(c: Collector, mid: str, raw: dict[str, Any]) -> dict[str, Any]:
    """filters.setParams, macros already substituted (compiler.macro_tree, compiler.ports)."""
    filters = get_map(c, ("models", mid, "filters"), raw.get("filters"))
    return get_map(c, _field_keys(mid, "filters.setParams"), filters.get("setParams"))


def _env(c: Collector, mid: str, raw: dict[str, Any]) -> tuple[str, ...]:
    items = get_list(c, ("models", mid, "env"), raw.get("env"))
    return tuple(get_str(c, ("models", mid, "env", i), e, "") for i, e in enumerate(items))


def build_model(
    c: Collector,
    d: ModelDraft,
    settings: Settings,
    capabilities: Capabilities,
    model_aliases: tuple[str, ...],
) -> Model:
    """The part of pass 2 after alias registration: model-local but for `model_aliases`.

    Reads only `settings.globalTTL`, `sendLoadingState` and `unloadTimeout` (compiler.session
    keys its cache on them).  The steps run in a fixed order, so diagnostics do too.
    """
    mid, raw = d.id, d.raw
    _check_proxy(c, d)
    ttl = _ttl(c, mid, raw, settings)
    limit = _concurrency_limit(c, mid, raw)
    set_params = _set_params(c, mid, raw)
    env = _env(c, mid, raw)
    check = d.text["checkEndpoint"]
    cmd = _argv(c, _field_keys(mid, "cmd"), d.text["cmd"], required=True) or ()
    return Model(
        id=mid,
        cmd=cmd,
        cmdStop=_argv(c, _field_keys(mid, "cmdStop"), d.text["cmdStop"], required=False),
        proxy=d.text["proxy"],
        checkEndpoint="none" if go_trim(check) == "none" else check,
        ttl=ttl,
        env=env,
        aliases=model_aliases,
        unlisted=get_bool(c, ("models", mid, "unlisted"), raw.get("unlisted"), False),
        useModelName=get_str(c, ("models", mid, "useModelName"), raw.get("useModelName"), ""),
        concurrencyLimit=limit,
        filters=Filters(
            stripParams=sanitize_strip_params(d.text["filters.stripParams"]),
            setParams=freeze(sanitize_set_params(set_params)),
            setParamsByID=freeze(sanitize_set_params_by_id(d.set_params_by_id)),
        ),
        metadata=freeze(d.metadata),
        name=d.text["name"],
        description=d.text["description"],
        sendLoadingState=get_bool(
            c,
            ("models", mid, "sendLoadingState"),
            raw.get("sendLoadingState"),
            settings.sendLoadingState,
        ),
        timeouts=read_timeouts(c, ("models", mid, "timeouts"), raw.get("timeouts"), Timeouts()),
        capabilities=capabilities,
        resources=freeze(model_resources(c, mid, raw)),
        unloadTimeout=_unload_timeout(c, mid, raw, settings),
    )
