"""Serving with a live config: the reloader, the optional file watcher and SIGHUP, wired up.

Why this module exists: the CLI only parses arguments; `runtime.serve.serve` owns
the server's lifecycle.  This module sits between them for hot reload (issue 5):
it builds the `Reloader` (always, so `POST /api/config/reload` and SIGHUP work
with or without `--watch-config`), starts a `ConfigWatcher` over the config
sources when asked, runs `serve`, and stops the watcher and waits for a reload
in progress on the way out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compiler.plan import Plan
from runtime.plan_diff import plan_digest
from runtime.reload import CompileFn, Reloader, config_compiler, plan_file_loader
from runtime.routes.config import RELOADER_KEY
from runtime.watcher import ConfigWatcher, WatchChange

log = logging.getLogger("llama_swap.reload")


@dataclass(frozen=True, slots=True)
class ConfigSources:
    """Where the running plan came from: `--config`/`--config-dir`, or `--plan`."""

    config: str | None = None
    config_dir: str | None = None
    plan: str | None = None

    def compile_fn(self) -> CompileFn:
        if self.plan:
            return plan_file_loader(self.plan)
        return config_compiler(self.config, self.config_dir)

    def watched(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(files, dirs) to watch."""
        if self.plan:
            return (self.plan,), ()
        files = (self.config,) if self.config else ()
        dirs = (self.config_dir,) if self.config_dir else ()
        return files, dirs


def attach_reloader(state: Any, plan: Plan, sources: ConfigSources) -> Reloader:
    """Create the Reloader for `state` (an AppState) and register it for the config routes."""
    listeners: list[Callable[[dict[str, Any]], None]] = state.extras.setdefault(
        "event_listeners", []
    )

    def publish(event: dict[str, Any]) -> None:
        for listener in tuple(listeners):
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed")

    reloader = Reloader(
        sources.compile_fn(), state.router.apply_plan, publish, plan=plan, digest=plan_digest(plan)
    )
    state.extras[RELOADER_KEY] = reloader
    return reloader


def start_watcher(
    reloader: Reloader, sources: ConfigSources, poll_interval: float | None = None
) -> ConfigWatcher:
    """Watch the config sources; each settled change requests a reload (call on the loop)."""
    files, dirs = sources.watched()

    def on_change(change: WatchChange) -> None:
        reloader.request(f"changed: {change.describe()}")

    watcher = ConfigWatcher(
        files, dirs, callback=on_change, loop=asyncio.get_running_loop(), poll_interval=poll_interval
    )
    watcher.start()
    reloader.watching = {
        "files": list(watcher.files),
        "dirs": list(watcher.dirs),
        "mode": f"poll {poll_interval:g}s" if poll_interval else "events",
        "debounceMs": int(watcher.debounce * 1000),
    }
    return watcher


async def serve_live(
    plan: Plan,
    sources: ConfigSources,
    *,
    watch: bool = False,
    poll_interval: float | None = None,
    version: str = "0",
    **serve_kwargs: Any,
) -> None:
    """`runtime.serve.serve` with hot reload: reloader always, watcher with `watch`."""
    from runtime.app import create_state
    from runtime.serve import serve, wire_logs

    proxy_log, upstream_log = wire_logs(plan)
    state = create_state(plan, proxy_log=proxy_log, upstream_log=upstream_log, version=version)
    reloader = attach_reloader(state, plan, sources)
    watcher = start_watcher(reloader, sources, poll_interval) if watch or poll_interval else None

    async def on_sighup() -> None:
        await reloader.reload("SIGHUP")

    try:
        await serve(plan, state=state, on_reload=on_sighup, version=version, **serve_kwargs)
    finally:
        if watcher is not None:
            await asyncio.to_thread(watcher.stop)
        await reloader.aclose()
