"""`hooks.on_startup.preload`: the models a config asks to have loaded at startup.

Run at startup, and again after a hot reload that changed the preload list or added or
restarted a model on it (`needs_preload`); models already running are kept.
"""

from __future__ import annotations

import logging
from typing import Any

from multidict import CIMultiDict

from llama_swap.runtime.core.errors import RouteFailure
from llama_swap.runtime.http.aio.proxy import UpstreamError
from llama_swap.runtime.http.services import Services

log = logging.getLogger("llama_swap.surface")


async def preload(services: Services) -> None:
    """Load `plan.preload` one after another through the router: each model is acquired
    (normal scheduling and swapping), sent a `GET /`, and released."""
    for model_id in services.plan.preload:
        if model_id not in services.router.processes:
            log.warning("preload: model %s is not a local model, skipping", model_id)
            continue
        log.info("preloading model: %s", model_id)
        try:
            lease = await services.router.acquire(model_id)
        except RouteFailure as failure:
            log.error("failed to preload model %s: status %d", model_id, failure.error.status)
            continue
        async with lease:
            try:
                resp = await services.upstreams.send(lease.model, "GET", "/", CIMultiDict(), None)
                status = resp.status
                await resp.read()
                resp.release()
            except (UpstreamError, OSError) as exc:
                log.error("failed to preload model %s: %s", model_id, exc)
                continue
        if status >= 400:
            log.error("failed to preload model %s: status %d", model_id, status)


def needs_preload(preload: tuple[str, ...], event: dict[str, Any]) -> bool:
    """Should an applied reload (its `configReload` event) run the preload hook again?"""
    if not preload or event.get("type") != "configReload" or not event.get("changed"):
        return False
    diff = event.get("diff") or {}
    touched = set(diff.get("added", ())) | set(diff.get("changedRestart", ()))
    return bool(diff.get("preloadChanged")) or any(m in touched for m in preload)
