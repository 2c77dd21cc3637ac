"""The compiler back end: merged config document -> frozen `Plan`.

`resolve` takes the merged, env-substituted, schema-valid document (plain
dicts, lists and scalars) and runs the original's loading steps in the
original's order (so the same config reports the same first problem):
top-level defaults; explicit aliases; global macros;
per model, in sorted id order, comment stripping, macro substitution, `${PORT}`
allocation, leftover-macro checks, capabilities, setParamsByID aliases, proxy
URL, argv splitting and defaults; routing; scheduler; peers; preload; then the
peer name space, selectors and profiles (compiler.namespaces, .selectors,
.profiles).

Every stage reports into one `Collector` and carries on, so one run shows all
errors.  Diagnostics carry key paths only; the pipeline adds file locations.
The result is deterministic: models and peers sorted by id, aliases by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from llama_swap.compiler import models as model_stage
from llama_swap.compiler.aliases import AliasTable, register_explicit
from llama_swap.compiler.budget import check_model_resources
from llama_swap.compiler.collect import Collector, get_map
from llama_swap.compiler.defaults import resolve_settings
from llama_swap.compiler.diagnostics import CompileError, Diagnostic
from llama_swap.compiler.hooks import resolve_preload
from llama_swap.compiler.macros import Macro, read_macros
from llama_swap.compiler.namespaces import NameSpace, check_against_peers, check_peer_namespace
from llama_swap.compiler.peers import resolve_peer
from llama_swap.compiler.plan import Model, Plan, Settings, Source, freeze
from llama_swap.compiler.ports import allocate_ports
from llama_swap.compiler.profiles import pin_keys, resolve_profiles
from llama_swap.compiler.routing import resolve_routing
from llama_swap.compiler.selectors import resolve_selectors


class ModelStages(Protocol):
    """The two per-model passes; `compiler.models` itself, or a cache (compiler.session)."""

    def prepare(
        self, c: Collector, mid: str, raw_value: Any, global_macros: list[Macro], broken: set[str]
    ) -> model_stage.ModelDraft: ...

    def finish(
        self, c: Collector, d: model_stage.ModelDraft, settings: Settings, aliases: AliasTable
    ) -> Model: ...


def _resolve_models(
    c: Collector,
    stage: ModelStages,
    raw_models: dict[str, Any],
    macros: tuple[list[Macro], set[str]],
    settings: Settings,
    aliases: AliasTable,
    port_hints: Mapping[str, int] | None,
    ports_out: dict[str, int] | None,
) -> dict[str, Model]:
    """Every model in id order: first pass, port allocation (it needs them all), second pass."""
    global_macros, broken_globals = macros
    drafts = [
        stage.prepare(c, mid, raw_models[mid], global_macros, broken_globals)
        for mid in sorted(raw_models)
    ]
    allocate_ports(c, drafts, settings.startPort, port_hints)
    if ports_out is not None:
        ports_out.update((d.id, d.port) for d in drafts if d.port is not None)
    return {d.id: stage.finish(c, d, settings, aliases) for d in drafts}


def resolve(
    doc: Mapping[str, Any],
    sources: tuple[Source, ...],
    *,
    port_hints: Mapping[str, int] | None = None,
    stages: ModelStages | None = None,
    ports_out: dict[str, int] | None = None,
) -> tuple[Plan, list[Diagnostic]]:
    """Build the plan; raise CompileError with every diagnostic when any is an error.

    Returns the plan and the warnings.  `port_hints` make `${PORT}` numbers sticky
    (compiler.ports); `stages` replaces the per-model passes by a caching
    equivalent; `ports_out`, when given, receives each model's allocated port.
    """
    stage: ModelStages = stages if stages is not None else model_stage
    c = Collector()
    top = get_map(c, (), doc)
    settings = resolve_settings(c, top)

    raw_models = get_map(c, ("models",), top.get("models"))
    model_maps = {mid: v if isinstance(v, Mapping) else {} for mid, v in raw_models.items()}
    aliases = register_explicit(c, model_maps)

    global_macros, broken_globals = read_macros(
        c, ("macros",), get_map(c, ("macros",), top.get("macros"))
    )
    models = _resolve_models(
        c, stage, raw_models, (global_macros, broken_globals), settings, aliases,
        port_hints, ports_out,
    )  # fmt: skip
    routing = resolve_routing(c, top, aliases)
    check_model_resources(c, routing.budget, models)

    raw_peers = get_map(c, ("peers",), top.get("peers"))
    peers = {
        pid: resolve_peer(c, pid, raw_peers[pid], global_macros, broken_globals)
        for pid in sorted(raw_peers)
    }
    preload = resolve_preload(c, top, aliases, peers)

    # The Go original's last loading steps, in its order: peer names, selectors, profiles.
    check_peer_namespace(c, aliases, peers, models)
    names = NameSpace.build(aliases, peers)
    selector_ids = set(get_map(c, ("selectors",), top.get("selectors")))
    selectors = resolve_selectors(c, top.get("selectors"), names, routing)
    check_against_peers(c, names, sorted(selector_ids), pin_keys(top.get("profiles")))
    profiles = resolve_profiles(c, top.get("profiles"), names, selector_ids)

    if c.errors:
        raise CompileError(c.diagnostics)
    plan = Plan(
        sources=tuple(sources),
        settings=settings,
        routing=routing,
        models=MappingProxyType(models),
        aliases=freeze(aliases.sorted_map()),
        peers=MappingProxyType(peers),
        preload=preload,
        selectors=MappingProxyType(selectors),
        profiles=MappingProxyType(profiles),
    )
    return plan, c.warnings
