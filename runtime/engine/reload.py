"""The reload coordinator: recompile off the loop, keep the old plan on failure, apply on success.

Why this module exists: three triggers (the file watcher, `POST /api/config/reload`,
SIGHUP) must all run the *same* reload, one at a time, and the outcome must be
visible (`GET /api/config/status`, the events stream, the log).  The coordinator
knows nothing about files or processes: it is given

- `compile_fn()`: a blocking function returning a `Loaded` (the new plan and its
  digest) or raising -- run in a worker thread via `asyncio.to_thread`.  Use
  `config_compiler(config, config_dir)` (the same pipeline as `swap-compile`) or
  `plan_file_loader(path)` (a plan written by `swap-compile`).  If it also has
  `compile_for(running_plan, running_digest)` that is called instead (sticky
  `${PORT}`s), and its `warm(plan, digest)` runs once in the background at start;
- `apply_fn(plan)`: a coroutine that swaps the running plan (the router's
  `apply_plan`, which returns the `PlanDiff` it applied);
- `on_event(dict)`: publishes the outcome on the events stream.

Invariants:
- a failed compile or load never calls `apply_fn`: the running plan stays, the
  errors are logged in the compiler's `file:line:col: key.path: message`
  format and recorded as `last_error` until the next successful reload;
- a plan whose digest equals the running one is not applied again;
- compile warnings (an unknown key is ignored, so a typo silently leaves a setting at
  its default) never go unnoticed: each reload logs them at warning level and reports
  them with file and line in its outcome (`lastReload.warnings`, the event), and the
  status keeps the running plan's (`warnings`) until a reload without any applies;
  with `strict` they are errors and the reload is refused like any failed compile;
- reloads never overlap; a reload requested while one runs is coalesced with
  every other such request into exactly ONE more run after it (never dropped),
  and every caller of `reload()` gets the outcome of a run that started after
  its request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from llama_swap.compiler.diagnostics import CompileError, Diagnostic
from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.plan_diff import PlanDiff, plan_digest, remember_digest, short_digest

log = logging.getLogger("llama_swap.reload")

EventSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Loaded:
    """A freshly compiled (or loaded) plan, with what the compile had to say."""

    plan: Plan
    digest: str
    warnings: str = ""  # rendered warnings, possibly empty
    # the same warnings for programs: {"severity", "file", "line", "column", "path", "message"}
    warning_diagnostics: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ReloadError:
    """Why a reload was refused; `text` is the full rendered report."""

    message: str
    text: str
    diagnostics: tuple[Mapping[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "text": self.text,
            "diagnostics": [dict(d) for d in self.diagnostics],
        }


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What one reload run did."""

    ok: bool
    reason: str
    digest: str  # the digest of the plan running afterwards
    changed: bool = False  # a new plan was applied
    diff: PlanDiff | None = None
    error: ReloadError | None = None
    duration: float = 0.0  # seconds, compile + apply
    warnings: tuple[Mapping[str, Any], ...] = ()  # what the compile warned about

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "digest": self.digest,
            "changed": self.changed,
            "summary": self.diff.summary() if self.diff is not None else None,
            "diff": self.diff.as_dict() if self.diff is not None else None,
            "error": self.error.as_dict() if self.error is not None else None,
            "warnings": [dict(w) for w in self.warnings],
            "durationMs": round(self.duration * 1000, 1),
        }


CompileFn = Callable[[], Loaded]
ApplyFn = Callable[[Plan], Awaitable[Any]]


# ---------------------------------------------------------------------------------------------
# compile functions


class ConfigCompiler:
    """Compiles --config/--config-dir through the compiler pipeline (as `swap-compile` does).

    It keeps a `compiler.session.CompileSession`, so a reload redoes only the work
    an edit invalidated (same result as a fresh compile), and it makes `${PORT}`
    numbers sticky: `compile_for(running)` passes the running plan's ports as
    `port_hints`, so adding a model that sorts before a running one does not
    shift the running one's port (and restart it).  The ports are the exact ones
    for plans this object compiled (the startup plan is matched by the warm-up
    compile), otherwise `compiler.ports.derive_ports`' guess.
    """

    _KEEP = 4  # ports of the last few plans compiled here, by digest

    def __init__(self, config: str | None, config_dir: str | None, *, strict: bool = False) -> None:
        from llama_swap.compiler.session import CompileSession

        self.config = config
        self.config_dir = config_dir
        self.strict = strict  # warnings are errors, as with `swap-compile --strict`
        self.session = CompileSession()
        self._ports: dict[str, Mapping[str, int]] = {}

    def __call__(self) -> Loaded:
        return self.compile_for(None)

    def compile_for(self, running: Plan | None, running_digest: str | None = None) -> Loaded:
        """Compile, keeping the ports `running` (the plan being served) gave its models."""
        hints: Mapping[str, int] | None = None
        if running is not None:
            hints = self._ports.get(running_digest or "")
            if hints is None:
                from llama_swap.compiler.ports import derive_ports

                hints = derive_ports(running)
        result = self.session.compile_paths(
            self.config, self.config_dir, strict=self.strict, port_hints=hints
        )
        return self._loaded(result)

    def warm(self, running: Plan | None = None, running_digest: str | None = None) -> Loaded | None:
        """Fill the session's caches (and learn the running plan's exact ports) ahead of a reload.

        Compiles without hints, as the startup compile did: when the digest matches
        the running plan's, the ports it allocated are the running plan's, and so are
        its warnings (returned for the status; None when the compile failed).
        """
        try:
            return self._loaded(
                self.session.compile_paths(self.config, self.config_dir, strict=self.strict)
            )
        except Exception:  # noqa: BLE001 - only a warm-up: the real reload reports problems
            log.debug("warm-up compile failed", exc_info=True)
            return None

    def _loaded(self, result: Any) -> Loaded:
        from llama_swap.compiler.render import render_text

        warnings = render_text(result.warnings, result.texts) if result.warnings else ""
        found = tuple(_diagnostic_dict(d) for d in result.warnings)
        return Loaded(result.plan, self._digest(result), warnings, found)

    def _digest(self, result: Any) -> str:
        digest = self.session.plan_digest(result.plan)
        remember_digest(result.plan, digest)
        self._ports[digest] = dict(result.ports)
        while len(self._ports) > self._KEEP:
            self._ports.pop(next(iter(self._ports)))
        return digest


def config_compiler(
    config: str | None, config_dir: str | None, *, strict: bool = False
) -> ConfigCompiler:
    """Compile --config/--config-dir through the compiler pipeline (as `swap-compile` does;
    `strict` as its `--strict`: warnings are errors and refuse the reload)."""
    return ConfigCompiler(config, config_dir, strict=strict)


def plan_file_loader(path: str) -> CompileFn:
    """Load a plan file written by `swap-compile` (validated like at startup)."""

    def load_now() -> Loaded:
        from llama_swap.runtime.engine.plan_loader import load_plan

        plan = load_plan(path)
        return Loaded(plan, plan_digest(plan))

    return load_now


def _diagnostic_dict(d: Diagnostic) -> dict[str, Any]:
    loc = d.location
    return {
        "severity": d.severity,
        "file": loc.file if loc else "",
        "line": loc.line if loc else 0,
        "column": loc.column if loc else 0,
        "path": d.path,
        "message": d.message,
    }


def describe_failure(exc: BaseException) -> ReloadError:
    """Turn whatever the compile or load raised into a ReloadError for people and programs."""
    if isinstance(exc, CompileError):
        from llama_swap.compiler.render import render_text

        texts = getattr(exc, "texts", None) or {}
        text = render_text(exc.diagnostics, texts).rstrip("\n")
        first = text.splitlines()[0] if text else str(exc)
        return ReloadError(first, text, tuple(_diagnostic_dict(d) for d in exc.diagnostics))
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, OSError | ValueError) and type(exc).__name__ != "PlanLoadError":
        text = f"{type(exc).__name__}: {text}"
    return ReloadError(text.splitlines()[0], text)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# the coordinator


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[ReloadOutcome]
    reasons: list[str] = field(default_factory=list)


class Reloader:
    """Runs reloads one at a time; see the module docstring."""

    def __init__(
        self,
        compile_fn: CompileFn,
        apply_fn: ApplyFn,
        on_event: EventSink | None = None,
        *,
        plan: Plan,
        digest: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._compile_fn = compile_fn
        self._apply_fn = apply_fn
        self._on_event = on_event
        self._clock = clock
        self.plan = plan
        self.digest = digest if digest is not None else plan_digest(plan)
        self.loaded_at = clock()
        self.last_error: ReloadError | None = None
        self.last_error_at: float | None = None
        self.last_outcome: ReloadOutcome | None = None
        self.last_outcome_at: float | None = None
        # the running plan's compile warnings (empty: none, or not known for the startup plan)
        self.warnings: tuple[Mapping[str, Any], ...] = ()
        self.counts = {"applied": 0, "unchanged": 0, "failed": 0}
        self._pending: _Pending | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.watching: dict[str, Any] | None = None  # filled in by whoever starts a watcher
        self._warmup: asyncio.Future[Any] | None = None
        warm = getattr(compile_fn, "warm", None)
        if callable(warm):  # prime a compile session off the loop, so the first reload is quick
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                self._warmup = loop.create_task(
                    asyncio.to_thread(warm, plan, self.digest), name="reload-warmup"
                )
                self._warmup.add_done_callback(self._learn_startup_warnings)

    def _learn_startup_warnings(self, warmup: asyncio.Future[Any]) -> None:
        """The warm-up compiled the startup plan's sources: if it produced the running plan,
        its warnings are the running plan's (the startup compile printed them to stderr)."""
        if warmup.cancelled() or warmup.exception() is not None:
            return
        loaded = warmup.result()
        if isinstance(loaded, Loaded) and loaded.digest == self.digest:
            self.warnings = loaded.warning_diagnostics

    # -- triggers ---------------------------------------------------------------------------

    async def reload(self, reason: str = "manual") -> ReloadOutcome:
        """Run a reload (or join the one queued after the current run) and return its outcome."""
        if self._closed:
            raise RuntimeError("reloader is closed")
        return await asyncio.shield(self._enqueue(reason))

    def request(self, reason: str) -> None:
        """Fire-and-forget trigger for sync callers on the loop (watcher callback, SIGHUP)."""
        if not self._closed:
            self._enqueue(reason).add_done_callback(_log_unexpected)

    def _enqueue(self, reason: str) -> asyncio.Future[ReloadOutcome]:
        loop = asyncio.get_running_loop()
        if self._pending is None:
            self._pending = _Pending(loop.create_future())
        self._pending.reasons.append(reason)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain(), name="reload")
        return self._pending.future

    async def aclose(self) -> None:
        """Stop accepting reloads; wait for the runs already requested to finish."""
        self._closed = True
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
        await self._warmed()

    async def _warmed(self) -> None:
        """Wait for the warm-up compile (the session must not be used by two threads)."""
        if self._warmup is not None:
            await asyncio.gather(self._warmup, return_exceptions=True)
            self._warmup = None

    @property
    def reloading(self) -> bool:
        return self._worker is not None and not self._worker.done()

    # -- the run ------------------------------------------------------------------------------

    async def _drain(self) -> None:
        while self._pending is not None:
            pending, self._pending = self._pending, None
            reason = ", ".join(dict.fromkeys(pending.reasons))
            try:
                outcome = await self._run_once(reason)
            except BaseException as exc:  # cancelled, or a bug: callers must not hang
                if not pending.future.done():
                    pending.future.set_exception(exc)
                    pending.future.exception()  # mark retrieved: the callers see it
                if isinstance(exc, asyncio.CancelledError):
                    raise
                log.exception("config reload failed unexpectedly")
                continue
            if not pending.future.done():
                pending.future.set_result(outcome)

    async def _run_once(self, reason: str) -> ReloadOutcome:
        t0 = time.perf_counter()
        log.info("reloading configuration (%s)", reason)
        await self._warmed()
        compile_for = getattr(self._compile_fn, "compile_for", None)
        try:
            if callable(compile_for):  # sticky ports: tell the compiler what is running
                loaded = await asyncio.to_thread(compile_for, self.plan, self.digest)
            else:
                loaded = await asyncio.to_thread(self._compile_fn)
        except Exception as exc:
            return self._failed(reason, describe_failure(exc), t0)
        if loaded.warnings:
            log.warning(
                "config reload: the configuration has warnings (ignored keys keep their"
                " defaults; --strict refuses such a config):\n%s",
                loaded.warnings.rstrip("\n"),
            )
        found = loaded.warning_diagnostics
        if loaded.digest == self.digest:
            log.info("configuration unchanged (plan %s); nothing to apply", short_digest(self.digest))
            self.warnings = found
            return self._done(
                ReloadOutcome(True, reason, self.digest, warnings=found), t0, "unchanged"
            )
        t_compiled = time.perf_counter()
        try:
            result = await self._apply_fn(loaded.plan)
        except Exception as exc:
            log.exception("applying the new plan failed; the running plan is kept")
            return self._failed(reason, describe_failure(exc), t0)
        diff = result if isinstance(result, PlanDiff) else None
        self.plan, self.digest = loaded.plan, loaded.digest
        self.warnings = found
        self.loaded_at = self._clock()
        self.last_error = self.last_error_at = None
        timing = (
            f"compiled in {(t_compiled - t0) * 1000:.0f} ms,"
            f" applied in {(time.perf_counter() - t_compiled) * 1000:.0f} ms"
        )
        if diff is not None:
            log.info("%s (%s)", diff.summary(), timing)
        else:
            log.info("config reloaded: plan %s (%s)", short_digest(loaded.digest), timing)
        return self._done(
            ReloadOutcome(True, reason, loaded.digest, True, diff, warnings=found), t0, "applied"
        )

    def _failed(self, reason: str, error: ReloadError, t0: float) -> ReloadOutcome:
        log.error(
            "config reload failed; still serving plan %s:\n%s", short_digest(self.digest), error.text
        )
        self.last_error, self.last_error_at = error, self._clock()
        return self._done(ReloadOutcome(False, reason, self.digest, error=error), t0, "failed")

    def _done(self, outcome: ReloadOutcome, t0: float, kind: str) -> ReloadOutcome:
        outcome = replace(outcome, duration=time.perf_counter() - t0)
        self.counts[kind] += 1
        self.last_outcome, self.last_outcome_at = outcome, self._clock()
        self._publish(outcome)
        return outcome

    def _publish(self, outcome: ReloadOutcome) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event({"type": "configReload", **outcome.as_dict()})
        except Exception:
            log.exception("publishing the reload event failed")

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The body of `GET /api/config/status`."""
        last = None
        if self.last_outcome is not None and self.last_outcome_at is not None:
            last = {"at": _iso(self.last_outcome_at), **self.last_outcome.as_dict()}
        error = None
        if self.last_error is not None and self.last_error_at is not None:
            error = {"at": _iso(self.last_error_at), **self.last_error.as_dict()}
        return {
            "digest": self.digest,
            "sources": [{"path": s.path, "sha256": s.sha256} for s in self.plan.sources],
            "loadedAt": _iso(self.loaded_at),
            "models": len(self.plan.models),
            "reloading": self.reloading,
            "reloads": dict(self.counts),
            "lastReload": last,
            "lastError": error,
            "warnings": [dict(w) for w in self.warnings],
            "watching": self.watching,
        }


def _log_unexpected(future: asyncio.Future[ReloadOutcome]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("config reload raised: %r", future.exception())
