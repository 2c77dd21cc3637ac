"""`GET /v1/models` (and `GET /models`) records, built from the plan and the processes' states.

Pure: `models_list(plan, now, ...)` returns the response document, sorted by id.
Local listed models (plus a copy per alias with `includeAliasesInList`), every
peer model under its full name `<peer>/<model>` (named `"<peer>: <model>"`),
every listed selector (`meta.llamaswap.type: "selector"`, its strategy and
targets; `status` loaded when a local target is ready or starting, for `pin`
the first target only), and the active profile's pins whose keys are new names
(`type: "profile"`, status unloaded, target not shown).

Clients written for llama-server read two things beside the OpenAI fields:
`status.value` (`loaded` while the model's process is anywhere between starting
and stopping, else `unloaded`; peers are always `unloaded`, their state is not
ours to know) and `meta.n_ctx` (the configured context length, when one is).
`meta.llamaswap` always exists and says what the record is (`type`: model,
alias or peer); the user's metadata goes in first and these internal keys win.
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


def _record(
    record_id: str,
    name: str,
    description: str,
    caps: Capabilities,
    metadata: Mapping[str, Any],
    created: int,
    loaded: bool,
    internal: dict[str, Any],
) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": record_id, "object": "model", "created": created, "owned_by": "llama-swap"}
    if name := name.strip():
        rec["name"] = name
    if description := description.strip():
        rec["description"] = description
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
    if _caps_configured(caps):
        metadata = {k: v for k, v in metadata.items() if k not in _CAPABILITY_META_KEYS}
    rec["meta"] = {"llamaswap": {**thaw(metadata), **internal}}
    if caps.context > 0:
        rec["meta"]["n_ctx"] = caps.context
    rec["status"] = {"value": "loaded" if loaded else "unloaded"}
    return rec


def model_record(
    record_id: str, model: Model, created: int, loaded: bool, internal: dict[str, Any]
) -> dict[str, Any]:
    """The record of a local model (or of one of its aliases, by `internal`)."""
    return _record(
        record_id, model.name, model.description, model.capabilities, model.metadata,
        created, loaded, internal,
    )


def is_loaded(state: ProcessState | None) -> bool:
    """A model counts as loaded from the moment its process starts until it has stopped."""
    return state is not None and state.occupies_memory


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
    """The `/v1/models` body for `plan` at unix time `now`; `states`: the local processes'
    states by model id (a missing one is stopped)."""
    states = states or {}
    data: list[dict[str, Any]] = []
    no_caps = Capabilities()
    for model_id, model in plan.models.items():
        if model.unlisted:
            continue
        loaded = is_loaded(states.get(model_id))
        internal: dict[str, Any] = {"type": "model"}
        if model.aliases:
            internal["aliases"] = list(model.aliases)
        data.append(model_record(model_id, model, now, loaded, internal))
        if plan.settings.includeAliasesInList:
            for alias in model.aliases:
                if alias := alias.strip():
                    data.append(
                        model_record(alias, model, now, loaded, {"type": "alias", "modelID": model_id})
                    )
    for peer_id, peer in plan.peers.items():
        for name in dict.fromkeys(peer.models):
            data.append(
                _record(
                    f"{peer_id}/{name}", f"{peer_id}: {name}", "", no_caps, {}, now, False,
                    {"type": "peer", "peerID": peer_id},
                )
            )
    for sel in plan.selectors.values():
        if not sel.unlisted:
            data.append(selector_record(plan, sel, states, now))
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
