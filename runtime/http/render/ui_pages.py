"""What each UI page shows, computed from the services as plain values.

The templates (runtime/http/aio/ui/templates/) only lay these values out; the same
values answer the page without JavaScript and the fragments the page script fetches
to stay live.  Times are whole seconds measured by the router's clock; the script
counts them on between two fetches (`data-since`, `data-left`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.http.observe.events import model_status
from llama_swap.runtime.http.render.queue import queue_document
from llama_swap.runtime.http.services import Services

LOG_LINES = 300  # lines of history written into the Logs page for readers without script


def queued_per_model(doc: dict[str, Any]) -> Counter[str]:
    """Requests waiting per model (queued, or waiting for a load in progress)."""
    count: Counter[str] = Counter(q["model"] for q in doc["queued"])
    for group in doc["loading"]:
        count.update(w["model"] for w in group["waiters"])
    return count


def _whole(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds)


def models_context(state: Services) -> dict[str, Any]:
    router = state.router
    states = {mid: proc.state for mid, proc in router.processes.items()}
    queue = queue_document(router.queue_snapshot(), router.waited)
    waiting = queued_per_model(queue)
    local = []
    for rec in model_status(state.plan, states):
        if rec["peerID"]:
            continue
        mid = rec["id"]
        model = state.plan.models[mid]
        proc_state = states.get(mid, ProcessState.STOPPED)
        in_flight = router.in_flight(mid)
        ttl_left = None
        if model.ttl > 0 and proc_state is ProcessState.READY and in_flight == 0:
            idle = router.idle_for(mid)
            if idle is not None:
                ttl_left = max(0, int(model.ttl - idle))
        local.append({
            **rec,
            "inFlight": in_flight,
            "queued": waiting.get(mid, 0),
            "ttl": model.ttl,
            "ttlLeft": ttl_left,
            "since": _whole(router.state_age(mid)) if proc_state.occupies_memory else None,
        })
    peers = [r for r in model_status(state.plan, {}) if r["peerID"]]
    usage = router.budget_usage()
    return {
        "budget": usage.to_json() if usage is not None else None,
        "models": local,
        "peers": peers,
        "loaded": sum(1 for r in local if r["state"] not in ("stopped", "shutdown")),
        "health_timeout": int(router.health_check_timeout),
        "waiting": queue["waiting"],
    }


def queue_context(state: Services) -> dict[str, Any]:
    router = state.router
    doc = queue_document(router.queue_snapshot(), router.waited)
    for group in doc["loading"]:
        group["since"] = _whole(router.state_age(group["model"]))
    return {"queue": doc, "fifo": doc["scheduler"] == "fifo"}


def playground_context(state: Services) -> dict[str, Any]:
    """Every model a request may name here: local ids (with aliases), then peers'."""
    plan = state.plan
    local = [{"id": mid, "name": m.name, "aliases": list(m.aliases)}
             for mid, m in plan.models.items()]
    peers = [name for peer in plan.peers.values() for name in peer.models]
    return {"models": local, "peer_models": peers, "auth": bool(plan.settings.apiKeys)}


def logs_context(state: Services, source: str, history: str) -> dict[str, Any]:
    sources = ["proxy", "upstream", *state.plan.models]
    if source not in sources:
        source = "proxy"
    lines = history.splitlines()[-LOG_LINES:]
    return {"sources": sources, "source": source, "history": "\n".join(lines)}


def _locate(diag: dict[str, Any]) -> str:
    """`file:line:column` of a diagnostic, as much of it as is known."""
    where = str(diag.get("file") or "")
    if diag.get("line"):
        where += f":{diag['line']}"
        if diag.get("column"):
            where += f":{diag['column']}"
    return where


def _located(diags: Any) -> list[dict[str, Any]]:
    return [{**d, "where": _locate(d)} for d in diags or () if isinstance(d, dict)]


def config_context(state: Services) -> dict[str, Any]:
    reloader = state.reloader
    status = reloader.status() if reloader is not None else None
    error = status.get("lastError") if status else None
    last = status.get("lastReload") if status else None
    # the running plan's warnings, else the last reload's (they are the same once applied)
    warnings = _located((status or {}).get("warnings") or (last or {}).get("warnings"))
    return {
        "status": status,
        "error": error,
        "last": last,
        "diff": (last or {}).get("diff"),
        "diagnostics": _located((error or {}).get("diagnostics")),
        "warnings": warnings,
        "plan_models": sorted(state.plan.models),
        "scheduler": state.plan.routing.scheduler or "serial",
    }
