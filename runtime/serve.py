"""Running a server: log wiring, listening, and the shutdown order.

Why separate from cli.py: the CLI only parses arguments and picks exit codes;
this module owns the lifecycle so tests and benchmarks can run a server
in-process too.

Shutdown order (SIGINT/SIGTERM, or `stop` set by a caller):
1. stop accepting connections (close the listening sockets);
2. `Router.shutdown(timeout)`: queued and waiting requests fail with 503,
   every child process is stopped (cmdStop or SIGTERM to its group, SIGKILL
   after the grace) and has exited;
3. close the remaining HTTP connections and the upstream client sessions.

Every client connection, whichever front door serves it, is in one ConnectionTable
(runtime/http/connections.py): read timeouts and the connection limit
(`ServeOptions.limits`, runtime/core/connections.py).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from aiohttp import web

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.connections import ConnectionLimits
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.http.aio.app import build_app, create_services
from llama_swap.runtime.http.aio.guard import GuardedConnection, track_requests
from llama_swap.runtime.http.connections import ConnectionTable, Tracked
from llama_swap.runtime.http.observe.access_log import LEVELS, ProxyLog, proxy_log_of
from llama_swap.runtime.http.services import FastPathCounters, Services

if TYPE_CHECKING:  # imported where used: a server without reloads or the fast path skips them
    from llama_swap.runtime.engine.reload import Reloader
    from llama_swap.runtime.engine.watcher import ConfigWatcher
    from llama_swap.runtime.http.fast.server import FastPath

DEFAULT_SHUTDOWN_TIMEOUT = 30.0
log = logging.getLogger("llama_swap.serve")
PY_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}


class EchoLogBuffer(LogBuffer):
    """A LogBuffer that also writes through to a text stream (the "mux" of the original)."""

    def __init__(self, name: str, stream: TextIO) -> None:
        super().__init__(name)
        self._stream = stream

    def write(self, data: str) -> None:
        super().write(data)
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):
            pass


class BufferHandler(logging.Handler):
    """Python logging records -> proxy log lines, formatted by the same ProxyLog as the
    access log (`[<time> ][LEVEL] message`, the time per `logTimeFormat`).

    A record is one line: its exception, if any, is summarised after the message (a
    malformed request makes aiohttp log one, and a client must not be able to flood
    the log with tracebacks); the traceback itself follows only at logLevel debug.

    `log` is read per record, so a hot reload's logLevel/logTimeFormat apply at once
    (serve.py points it at the running state's current settings)."""

    def __init__(self, buffer: LogBuffer, log: Callable[[], ProxyLog]) -> None:
        super().__init__()
        self.buffer = buffer
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            proxy_log = self.log()
            text = one_line(record)
            if record.exc_info and proxy_log.level <= LEVELS["debug"]:
                text += "\n" + _TRACEBACKS.formatException(record.exc_info)
            proxy_log.log(_level_name(record.levelno), text)
        except Exception:
            self.handleError(record)


_TRACEBACKS = logging.Formatter()


def one_line(record: logging.LogRecord) -> str:
    """The record's message and its exception's type and text, whitespace collapsed
    (aiohttp's parser errors span several lines)."""
    message = record.getMessage()
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None:
        message = f"{message}: {type(exc).__name__}: {exc}"
    return " ".join(message.split())


def _level_name(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


# Loggers whose records belong in the proxy log.  aiohttp's and asyncio's would otherwise
# reach Python's last-resort handler, which prints them, tracebacks included, on stderr
# whatever logToStdout says.
PROXY_LOGGERS = ("llama_swap", "aiohttp", "asyncio")


def _set_levels(level: str) -> None:
    for name in PROXY_LOGGERS:
        logging.getLogger(name).setLevel(PY_LEVELS.get(level.strip().lower(), logging.INFO))


def wire_logs(plan: Plan, stdout: TextIO | None = None) -> tuple[LogBuffer, LogBuffer]:
    """The proxy and upstream logs, echoed to stdout per `logToStdout`;
    the Python loggers in PROXY_LOGGERS write into the proxy log at `logLevel`."""
    out = stdout if stdout is not None else sys.stdout
    mode = plan.settings.logToStdout
    mux = EchoLogBuffer("mux", out) if mode != "none" else LogBuffer("mux")
    proxy = LogBuffer("proxy", parent=None if mode in ("upstream", "none") else mux)
    upstream = LogBuffer("upstream", parent=mux if mode in ("upstream", "both") else None)
    settings = plan.settings
    fixed = ProxyLog(proxy, settings.logLevel, settings.logTimeFormat)
    for name in PROXY_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, BufferHandler)]:
            logger.removeHandler(old)
        logger.addHandler(BufferHandler(proxy, lambda: fixed))
        logger.propagate = False
    _set_levels(settings.logLevel)
    return proxy, upstream


def follow_plan_logs(state: Services) -> None:
    """Point the proxy loggers' BufferHandlers at `state`'s current log settings
    (so hot-reloaded logLevel/logTimeFormat apply to Python log records too)."""
    current = proxy_log_of(state)
    levels: list[str] = []

    def log() -> ProxyLog:
        proxy_log = current()
        level = state.plan.settings.logLevel
        if not levels or levels[0] != level:
            levels[:] = [level]
            _set_levels(level)
        return proxy_log

    for name in PROXY_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, BufferHandler) and handler.buffer is state.proxy_log:
                handler.log = log


def parse_listen(listen: str, tls: bool) -> tuple[str | None, int]:
    """`:8080`, `host:port`, `[::1]:port`; empty means `:8080` (`:8443` with TLS).

    Raises ValueError with a readable message for anything else -- in particular a port
    outside 0..65535, which the socket layer would silently truncate to 16 bits."""
    if not listen:
        return None, 8443 if tls else 8080
    host, sep, port = listen.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if not sep or ("[" in host or "]" in host) and not bracketed:
        raise ValueError(f"invalid listen address {listen!r} (expected host:port or [ipv6]:port)")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"invalid listen address {listen!r}: port must be a number 0-65535")
    host = host[1:-1] if bracketed else host
    return (host or None), int(port)


@dataclass(frozen=True)
class ServeOptions:
    """How to serve a plan.

    `compile_fn` (runtime.engine.reload's `config_compiler` / `plan_file_loader`) enables
    reloads: SIGHUP always, and the config watcher when `watch_files`/`watch_dirs` are
    given.  `fast_path`: serve plain JSON inference requests through runtime/http/fast
    (in front of the app, TLS or not); only with the default routes and middleware stack,
    so a caller that changes those gets exactly the app it built.  `limits`: the read
    timeouts and the connection limit of client connections (both front doors)."""

    listen: str = ""
    ssl_context: ssl.SSLContext | None = None
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    route_modules: Sequence[str] | None = None
    middlewares: Sequence[Any] | None = None
    on_listening: Callable[[list[str]], None] | None = None
    compile_fn: Callable[[], Any] | None = None
    watch_files: Sequence[str] = ()
    watch_dirs: Sequence[str] = ()
    watch_poll: float | None = None
    version: str = "0"
    fast_path: bool = True
    limits: ConnectionLimits = ConnectionLimits()

    @property
    def uses_fast_path(self) -> bool:
        return self.fast_path and self.route_modules is None and self.middlewares is None


async def serve(
    plan: Plan,
    options: ServeOptions = ServeOptions(),  # noqa: B008 -- frozen, never mutated
    *,
    stop: asyncio.Event | None = None,
    services: Services | None = None,
) -> None:
    """Serve `plan` until SIGINT/SIGTERM (or `stop`), then shut down in order."""
    loop = asyncio.get_running_loop()
    stop = stop if stop is not None else asyncio.Event()
    if services is None:
        proxy_log, upstream_log = wire_logs(plan)
        services = create_services(
            plan, proxy_log=proxy_log, upstream_log=upstream_log, version=options.version
        )
    follow_plan_logs(services)
    reloader = None
    if options.compile_fn is not None:
        reloader = services.reloader = _make_reloader(services, options.compile_fn)
    app = _build_app(services, options)
    installed = _install_signals(loop, stop, reloader)
    await services.router.start()
    runner = await _start_runner(app, options.limits)
    table = ConnectionTable(options.limits)
    guarded = _guarded(runner, table)
    lane = _fast_path(services, guarded, table) if options.uses_fast_path else None
    protocol = lane.protocol if lane is not None else lambda: guarded(None, None)
    try:
        host, port = parse_listen(options.listen, options.ssl_context is not None)
        site = await _listen(runner, host, port, options.ssl_context, protocol,
                             options.limits.head_timeout)
    except BaseException:
        await services.router.shutdown(options.shutdown_timeout)
        await runner.cleanup()
        raise
    watcher = await _start_watcher(loop, reloader, options) if reloader is not None else None
    _announce(site, options)
    warn_if_exposed(_bound_hosts(site), services.plan)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        for sig in installed:
            loop.remove_signal_handler(sig)
        await site.stop()
        if watcher is not None:
            await asyncio.to_thread(watcher.stop)
        if reloader is not None:
            await reloader.aclose()
        await services.router.shutdown(options.shutdown_timeout)
        table.close()
        if lane is not None:
            lane.close()
        services.proxy_log.close_subscribers()
        services.upstream_log.close_subscribers()
        await runner.cleanup()
        log.info("shutdown complete")


def _build_app(services: Services, options: ServeOptions) -> web.Application:
    middlewares = options.middlewares
    if middlewares is None:
        from llama_swap.runtime.http.aio.stack import default_middlewares

        middlewares = default_middlewares(services)
    else:  # the default stack tells the connection guards about requests; others need this
        middlewares = [track_requests, *middlewares]
    if options.route_modules is None:
        return build_app(services, middlewares=middlewares)
    return build_app(services, route_modules=tuple(options.route_modules), middlewares=middlewares)


def _install_signals(
    loop: asyncio.AbstractEventLoop, stop: asyncio.Event, reloader: Reloader | None
) -> list[int]:
    """SIGINT/SIGTERM stop the server, SIGHUP asks for a reload; the signals installed
    (none outside the main thread)."""
    handlers: list[tuple[int, Callable[[], object]]] = [
        (signal.SIGINT, stop.set), (signal.SIGTERM, stop.set),
    ]
    if reloader is not None:
        handlers.append((signal.SIGHUP, lambda: reloader.request("SIGHUP")))
    installed: list[int] = []
    for sig, handler in handlers:
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    return installed


# After an answer given before the request's body was read (a 401 or 413 from the head),
# aiohttp reads and discards the rest for this long before it closes the connection.
# Closing at once would reset a connection whose client is still sending, and the reset
# can destroy the answer before the client reads it; aiohttp's 10 s let a fast client
# push gigabytes for nothing.  2 s is ample for an answer to travel and be read.
LINGERING_TIME = 2.0


async def _start_runner(app: web.Application, limits: ConnectionLimits) -> web.AppRunner:
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=2.0,
        keepalive_timeout=limits.keepalive_timeout or 3630,  # the guards enforce it too
        # aiohttp's defaults (8 KiB per header, 128 headers) reject long cookies and JWTs
        # that the Go original (1 MiB of headers) accepts.
        max_line_size=65536,
        max_field_size=1 << 20,
        max_headers=1000,
        lingering_time=LINGERING_TIME,
    )
    await runner.setup()
    return runner


GuardedFactory = Callable[[Tracked | None, float | None], GuardedConnection]


def _guarded(runner: web.AppRunner, table: ConnectionTable) -> GuardedFactory:
    """Makes aiohttp's protocol for a connection, behind its guard (aio/guard.py): for a
    new connection (None, None) or one the fast path hands off (its entry, head start)."""
    server = runner.server
    assert server is not None

    def make(previous: Tracked | None, head_started: float | None) -> GuardedConnection:
        return GuardedConnection(server(), table, previous, head_started)

    return make


def _fast_path(services: Services, guarded: GuardedFactory, table: ConnectionTable) -> FastPath:
    """The fast path in front of the runner's aiohttp server; its counters go on /metrics."""
    from llama_swap.runtime.http.fast.server import FastPath

    counters = services.fast_path = FastPathCounters()
    return FastPath(services, guarded, counters, table)


async def _start_watcher(
    loop: asyncio.AbstractEventLoop, reloader: Reloader, options: ServeOptions
) -> ConfigWatcher | None:
    """Watch the config files (when asked) and ask for a reload when they change."""
    if not (options.watch_files or options.watch_dirs):
        return None
    from llama_swap.runtime.engine.watcher import ConfigWatcher

    poll = options.watch_poll
    watcher = ConfigWatcher(
        options.watch_files, options.watch_dirs, loop=loop, poll_interval=poll,
        baseline=reloader.plan.sources,  # what the running plan was compiled from
        callback=lambda change: reloader.request(f"config changed: {change.describe()}"),
    )
    await asyncio.to_thread(watcher.start)
    reloader.watching = {
        "files": list(watcher.files),
        "dirs": list(watcher.dirs),
        "mode": f"poll {poll:g}s" if poll else "events",
        "debounceMs": int(watcher.debounce * 1000),
    }
    return watcher


def _announce(site: web.TCPSite, options: ServeOptions) -> None:
    """With `on_listening` the caller announces the addresses (the CLI: one line on
    stderr, which scripts and tests read); logging them at info too would print them
    twice whenever logToStdout sends the proxy log to the terminal."""
    addresses = _addresses(site, options.ssl_context is not None)
    level = logging.DEBUG if options.on_listening is not None else logging.INFO
    log.log(level, "llama-swap listening on %s", ", ".join(addresses))
    if options.on_listening is not None:
        options.on_listening(addresses)


class GuardedSite(web.TCPSite):
    """A TCPSite whose connections start with `protocol`: the fast path
    (runtime/http/fast/server.py), which hands them to the runner's aiohttp server when a
    request is not its own, or aiohttp's handler behind its guard (aio/guard.py).  The
    TLS handshake gets the head timeout (asyncio's default is a minute)."""

    def __init__(self, runner: web.AppRunner, host: str | None, port: int, *,
                 protocol: Callable[[], asyncio.Protocol], handshake_timeout: float,
                 ssl_context: ssl.SSLContext | None = None,
                 reuse_address: bool | None = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_address=reuse_address)
        self._protocol = protocol
        self._handshake_timeout = handshake_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        tls = self._ssl_context is not None and self._handshake_timeout > 0
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout if tls else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


async def _listen(
    runner: web.AppRunner, host: str | None, port: int, ssl_context: ssl.SSLContext | None,
    protocol: Callable[[], asyncio.Protocol], handshake_timeout: float,
) -> web.TCPSite:
    """Start listening.  Port 0 on a host with several addresses (`:0` is 0.0.0.0 and ::)
    would give each socket its own random port; instead one port is picked by binding the
    first address, and every address listens on it (retried if that port is taken)."""
    attempts = 1
    while True:
        chosen = await _shared_port(host) if port == 0 else port
        site = GuardedSite(runner, host, chosen, protocol=protocol,
                           handshake_timeout=handshake_timeout, ssl_context=ssl_context,
                           reuse_address=True)
        try:
            await site.start()
            return site
        except OSError as exc:
            await site.stop()
            # only a port we picked may be picked again: someone took it meanwhile
            if chosen == port or exc.errno != errno.EADDRINUSE or attempts == 5:
                raise
            attempts += 1


async def _shared_port(host: str | None) -> int:
    """A free port on the first address `host` resolves to, when it resolves to several;
    0 (let the one socket pick) otherwise."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if len({(info[0], info[4][:2]) for info in infos}) < 2:
        return 0
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.bind(address)
        return int(probe.getsockname()[1])


def _make_reloader(services: Services, compile_fn: Callable[[], Any]) -> Reloader:
    from llama_swap.runtime.engine.reload import Reloader

    return Reloader(compile_fn, services.router.apply_plan, services.listeners, plan=services.plan)


def is_loopback(host: str) -> bool:
    """Whether `host` (a bound address) is reachable only from this machine."""
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False


def warn_if_exposed(hosts: Sequence[str], plan: Plan) -> None:
    """Listening beyond loopback without apiKeys lets anyone who reaches the port load
    models, read logs and captures and reload the config: say so, in the proxy log
    and on stderr (which logToStdout does not silence)."""
    exposed = [h for h in hosts if not is_loopback(h)]
    if not exposed or plan.settings.apiKeys:
        return
    message = (f"listening on {', '.join(exposed)} without apiKeys: anyone who can reach "
               "the port can use and manage this proxy; set apiKeys or listen on "
               "127.0.0.1 (see docs/security.md)")
    log.warning(message)
    print(f"llama-swap: warning: {message}", file=sys.stderr, flush=True)


def _bound_hosts(site: web.TCPSite) -> list[str]:
    server = site._server  # aiohttp keeps the asyncio server here
    return [str(sock.getsockname()[0]) for sock in getattr(server, "sockets", None) or ()]


def _addresses(site: web.TCPSite, tls: bool) -> list[str]:
    scheme = "https" if tls else "http"
    server = site._server  # aiohttp keeps the asyncio server here; we want the bound ports
    out: list[str] = []
    for sock in getattr(server, "sockets", None) or ():
        addr = sock.getsockname()
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        out.append(f"{scheme}://{host}:{addr[1]}")
    return out or [site.name]
