"""The compiler back end: merged config document -> frozen `Plan`.

`resolve` takes the merged, env-substituted, schema-valid document (plain
dicts, lists and scalars) and runs the original's loading steps in their
order (reference §2.1): top-level defaults; explicit aliases; global macros;
per model, in sorted id order, comment stripping, macro substitution, `${PORT}`
allocation, leftover-macro checks, capabilities, setParamsByID aliases, proxy
URL, argv splitting and defaults; routing; scheduler; preload; peers.

Every stage reports into one `Collector` and carries on, so one run shows all
errors.  Diagnostics carry key paths only; the pipeline adds file locations.
The result is deterministic: models and peers sorted by id, aliases by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from compiler import models as model_stage
from compiler.aliases import check_peer_names, register_explicit
from compiler.collect import Collector, get_map
from compiler.defaults import resolve_settings
from compiler.diagnostics import CompileError, Diagnostic
from compiler.hooks import resolve_preload
from compiler.macros import read_macros
from compiler.peers import resolve_peer
from compiler.plan import Plan, Source, freeze
from compiler.ports import allocate_ports
from compiler.routing import resolve_routing


def resolve(doc: Mapping[str, Any], sources: tuple[Source, ...]) -> tuple[Plan, list[Diagnostic]]:
    """Build the plan; raise CompileError with every diagnostic when any is an error.

    Returns the plan and the warnings.
    """
    c = Collector()
    top = get_map(c, (), doc)
    settings = resolve_settings(c, top)

    raw_models = get_map(c, ("models",), top.get("models"))
    model_maps = {mid: v if isinstance(v, Mapping) else {} for mid, v in raw_models.items()}
    aliases = register_explicit(c, model_maps)

    global_macros, broken_globals = read_macros(
        c, ("macros",), get_map(c, ("macros",), top.get("macros"))
    )

    drafts = [
        model_stage.prepare(c, mid, raw_models[mid], global_macros, broken_globals)
        for mid in sorted(raw_models)
    ]
    allocate_ports(c, drafts, settings.startPort)
    models = {d.id: model_stage.finish(c, d, settings, aliases) for d in drafts}

    routing = resolve_routing(c, top, aliases)

    raw_peers = get_map(c, ("peers",), top.get("peers"))
    peers = {
        pid: resolve_peer(c, pid, raw_peers[pid], global_macros, broken_globals)
        for pid in sorted(raw_peers)
    }
    check_peer_names(c, aliases, {pid: list(p.models) for pid, p in peers.items()})
    preload = resolve_preload(c, top, aliases, peers)

    if top.get("profiles"):
        c.warn(("profiles",), "profiles are deprecated and ignored; use routing groups instead")

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
    )
    return plan, c.warnings
