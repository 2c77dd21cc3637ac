"""Where a model-dispatched request goes, decided from plain values before anything is
acquired or answered.

The rules, in order:
- no model named: nothing to route (404 `no model id could be identified`);
- a local model -- one the current plan lists *and* the router runs a process for -- is
  served locally.  A model a hot reload removed may still have a process draining its
  last requests; it is no longer the plan's, so new requests treat it as unknown;
- a local streaming chat request whose model is not ready, when the model asks for
  `sendLoadingState`, first gets the loading-state prelude in its event stream;
- else the peer model the name means serves it: a `peer/model` name, or a bare id
  exactly one peer offers (`Plan.peer_model`);
- else the name is unknown (404).

Before `admit`, both front doors apply the active profile's pins and selectors
(runtime/core/model_choice.py), so `model_id` is already the name the request is
really for.  Both front doors ask `admit`; the fast path serves only `Admit.LOCAL` and
hands every other outcome to the general (aiohttp) path, which answers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Protocol

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.process_state import ProcessState


class Admit(Enum):
    """An admission outcome; its value says why."""

    NO_MODEL = "the request names no model"
    LOCAL = "a local model: acquire it and forward"
    LOADING = "a local model that is not ready and streams its loading progress first"
    PEER = "not a local model, but a peer lists it"
    UNKNOWN = "neither a local model (possibly one a reload removed) nor any peer's"

    @property
    def reason(self) -> str:
        return self.value


class HasState(Protocol):
    """What admission reads of a model's process."""

    @property
    def state(self) -> ProcessState: ...


def wants_loading_state(path: str, streaming: bool, enabled: bool, ready: bool) -> bool:
    """The original's four conditions for the loading-state prelude (`path`: the one
    forwarded upstream)."""
    return streaming and enabled and path.startswith("/v1/chat/completions") and not ready


def admit(
    plan: Plan, live: Mapping[str, HasState], model_id: str, path: str, streaming: bool
) -> Admit:
    """Route a request for `model_id` (resolved through aliases and filters) to be
    forwarded at `path`.  `live`: the router's processes by model id."""
    if not model_id:
        return Admit.NO_MODEL
    model = plan.models.get(model_id)
    if model is not None:
        proc = live.get(model_id)
        if proc is not None:
            if model.sendLoadingState and wants_loading_state(
                path, streaming, True, proc.state is ProcessState.READY
            ):
                return Admit.LOADING
            return Admit.LOCAL
    if plan.peer_for(model_id) is not None:
        return Admit.PEER
    return Admit.UNKNOWN
