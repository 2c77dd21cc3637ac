"""Websocket upgrades and the models that opt out of scheduling them.

A request is a websocket upgrade when one of its `Connection` values has the token
`upgrade` and one of its `Upgrade` values the token `websocket` (case-insensitive, comma
lists and repeated headers both count).

A model with `compat.ignoreWebsockets` (always `comfyui_auto`) keeps its websockets out of
the scheduler: an upgrade never starts, queues for or holds the model, is not counted in
flight and does not refresh its ttl -- a page left open must not pin a model in memory or
bring it back. So such an upgrade is served only while the model is ready (409 otherwise),
and the model may be swapped out under an open socket.
"""

from __future__ import annotations

from collections.abc import Iterable

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.errors import RouteError, unknown_model
from llama_swap.runtime.core.process_state import ProcessState


def _has_token(values: Iterable[str], token: str) -> bool:
    return any(part.strip().lower() == token for value in values for part in value.split(","))


def is_websocket_upgrade(connection: Iterable[str], upgrade: Iterable[str]) -> bool:
    """`connection`, `upgrade`: every value of those request headers."""
    return _has_token(connection, "upgrade") and _has_token(upgrade, "websocket")


def ignores_websockets(plan: Plan, model_id: str) -> bool:
    model = plan.models.get(model_id)
    return model is not None and model.ignoreWebsockets


def ignored_websocket_refusal(
    plan: Plan, model_id: str, state: ProcessState | None
) -> RouteError | None:
    """Why an ignored websocket for `model_id` cannot be served now (`state`: its
    process's, None when it has none), else None: proxy it directly."""
    if model_id not in plan.models or state is None:
        return unknown_model(model_id)
    if state is not ProcessState.READY:
        return RouteError(409, f"model {model_id} is not loaded; ignored websocket requests cannot start it")
    return None
