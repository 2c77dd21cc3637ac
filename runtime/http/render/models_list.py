"""`GET /v1/models` records, built from the plan alone.

Pure: `models_list(plan, now, ...)` returns the response document, sorted by id.
Local listed models (plus a copy per alias with `includeAliasesInList`), every
peer model under its full name `<peer>/<model>` (named `"<peer>: <model>"`),
every listed selector (`meta.llamaswap.type: "selector"`, its strategy and
targets; `status` loaded when a local target is ready or starting, for `pin`
the first target only), and the active profile's pins whose keys are new names
(`type: "profile"`, status unloaded, target not shown).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_swap.compiler.plan import Capabilities, Model, Plan, Selector, thaw
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.profiles import listed_pins

_CAPABILITY_META_KEYS = ("architecture", "capabilities", "supported_parameters", "context_length")


def _caps_configured(c: Capabilities) -> bool:
    return bool(c.in_ or c.out or c.tools or c.reranker or c.context)


def capability_flags(c: Capabilities) -> dict[str, bool]:
    """The `capabilities` map of a record (only the true flags)."""
    flags = {
        "vision": "image" in c.in_,
        "audio_transcriptions": "audio" in c.in_ and "text" in c.out,
        "audio_speech": "text" in c.in_ and "audio" in c.out,
        "image_generation": "text" in c.in_ and "image" in c.out,
        "image_to_image": "image" in c.in_ and "image" in c.out,
        "function_calling": c.tools,
        "reranker": c.reranker,
    }
    return {k: True for k, v in flags.items() if v}


def model_record(record_id: str, model: Model, created: int) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": record_id, "object": "model", "created": created, "owned_by": "llama-swap"}
    if name := model.name.strip():
        rec["name"] = name
    if description := model.description.strip():
        rec["description"] = description
    caps = model.capabilities
    if caps.in_ or caps.out:
        arch: dict[str, Any] = {"input_modalities": list(caps.in_), "output_modalities": list(caps.out)}
        if caps.in_ and caps.out:
            arch["modality"] = "+".join(caps.in_) + "->" + "+".join(caps.out)
        rec["architecture"] = arch
    if flags := capability_flags(caps):
        rec["capabilities"] = flags
    if caps.tools:
        rec["supported_parameters"] = ["tools", "tool_choice"]
    if caps.context > 0:
        rec["context_length"] = caps.context
    meta: Mapping[str, Any] = model.metadata
    if _caps_configured(caps):
        meta = {k: v for k, v in meta.items() if k not in _CAPABILITY_META_KEYS}
    if meta:
        rec["meta"] = {"llamaswap": thaw(meta)}
    return rec


def _selector_loaded(plan: Plan, sel: Selector, states: Mapping[str, ProcessState]) -> bool:
    considered = sel.resolved[:1] if sel.strategy == "pin" else sel.resolved
    return any(
        r in plan.models and states.get(r) in (ProcessState.READY, ProcessState.STARTING)
        for r in considered
    )


def selector_record(
    plan: Plan, sel: Selector, states: Mapping[str, ProcessState], now: int
) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": sel.id, "object": "model", "created": now, "owned_by": "llama-swap"}
    if sel.name:
        rec["name"] = sel.name
    if sel.description:
        rec["description"] = sel.description
    loaded = _selector_loaded(plan, sel, states)
    rec["status"] = {"value": "loaded" if loaded else "unloaded"}
    meta: dict[str, Any] = dict(thaw(sel.metadata))
    meta.update({"type": "selector", "strategy": sel.strategy, "targets": list(sel.targets)})
    if sel.strategy == "spillover":
        meta["spillover"] = sel.spillover
    rec["meta"] = {"llamaswap": meta}
    return rec


def models_list(
    plan: Plan,
    now: int,
    active_profile: str | None = None,
    states: Mapping[str, ProcessState] | None = None,
) -> dict[str, Any]:
    """The `/v1/models` body for `plan` at unix time `now`."""
    data: list[dict[str, Any]] = []
    for model_id, model in plan.models.items():
        if model.unlisted:
            continue
        data.append(model_record(model_id, model, now))
        if plan.settings.includeAliasesInList:
            for alias in model.aliases:
                if alias := alias.strip():
                    data.append(model_record(alias, model, now))
    for peer_id, peer in plan.peers.items():
        for name in dict.fromkeys(peer.models):
            data.append(
                {
                    "id": f"{peer_id}/{name}",
                    "object": "model",
                    "created": now,
                    "owned_by": "llama-swap",
                    "name": f"{peer_id}: {name}",
                    "status": {"value": "unloaded"},
                    "meta": {"llamaswap": {"type": "peer", "peerID": peer_id}},
                }
            )
    for sel in plan.selectors.values():
        if not sel.unlisted:
            data.append(selector_record(plan, sel, states or {}, now))
    for pin in listed_pins(plan, active_profile):
        data.append(
            {
                "id": pin,
                "object": "model",
                "created": now,
                "owned_by": "llama-swap",
                "status": {"value": "unloaded"},
                "meta": {"llamaswap": {"type": "profile"}},
            }
        )
    data.sort(key=lambda rec: rec["id"])
    return {"object": "list", "data": data}
