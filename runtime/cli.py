"""`llama-swap`: parse arguments, get a plan, serve it, pick the exit code.

Exit codes: 0 ok (including a signal-initiated shutdown), 1 invalid config or
plan, 2 usage error, 3 internal error (with a "please report" line).

The plan comes from `--plan` (a `swap-compile` output) or is compiled
in-process from `--config` / `--config-dir` via `compiler.pipeline`; the
runtime itself never reads YAML.  Go's single-dash spellings (`-config`,
`-listen`, ...) are accepted as well as the double-dash ones.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import ssl
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from llama_swap.compiler.diagnostics import CompileError, Diagnostic
from llama_swap.compiler.plan import Plan
from llama_swap.runtime import native
from llama_swap.runtime.core.connections import ConnectionLimits
from llama_swap.runtime.engine.plan_loader import PlanLoadError, load_plan
from llama_swap.runtime.http.render.version import package_version as version
from llama_swap.runtime.http.render.version import version_line
from llama_swap.runtime.serve import DEFAULT_SHUTDOWN_TIMEOUT, ServeOptions, parse_listen, serve

EXIT_OK, EXIT_CONFIG, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the proxy's per-request CPU drops by a
    fifth or more: bench/proxy_overhead.py), else asyncio's own.  `LLAMA_SWAP_LOOP=asyncio`
    forces the standard loop."""
    if os.environ.get("LLAMA_SWAP_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-swap",
        description="Serve a compiled plan: an OpenAI-compatible proxy that swaps model servers.",
        allow_abbrev=False,
    )

    def opt(name: str, **kw: object) -> None:
        p.add_argument(f"--{name}", f"-{name}", **kw)  # type: ignore[arg-type]

    opt("config", metavar="FILE", help="YAML config file (compiled in-process)")
    opt("demo", action="store_true",
        help="serve the built-in demo config (fake models, no GPU or downloads needed)")
    opt("config-dir", metavar="DIR", help="directory of YAML fragments merged after --config")
    opt("plan", metavar="PLAN", help="a plan JSON written by swap-compile (instead of a config)")
    opt("listen", metavar="ADDR", default="", help="listen address (default :8080, :8443 with TLS)")
    opt("watch-config", action="store_true", help="reload when the config changes")
    opt("watch-poll", metavar="S", type=float, default=None, help="poll the config every S seconds")
    opt("strict", action="store_true",
        help="treat config warnings (unknown keys, ...) as errors, at startup and on reload")
    opt("tls-cert-file", metavar="FILE", default="", help="TLS certificate")
    opt("tls-key-file", metavar="FILE", default="", help="TLS key")
    opt("shutdown-timeout", metavar="S", type=float, default=DEFAULT_SHUTDOWN_TIMEOUT,
        help=f"seconds allowed for a graceful shutdown (default {DEFAULT_SHUTDOWN_TIMEOUT:g})")
    limits = ConnectionLimits()
    opt("head-timeout", metavar="S", type=float, default=limits.head_timeout,
        help="seconds a client may take to send a request head, from its first byte "
             f"(0: no limit; default {limits.head_timeout:g})")
    opt("body-idle-timeout", metavar="S", type=float, default=limits.body_idle_timeout,
        help="seconds a request body may pause between bytes "
             f"(0: no limit; default {limits.body_idle_timeout:g})")
    opt("keepalive-timeout", metavar="S", type=float, default=limits.keepalive_timeout,
        help="seconds an idle kept-alive client connection stays open "
             f"(0: no limit; default {limits.keepalive_timeout:g})")
    opt("max-connections", metavar="N", type=int, default=limits.max_connections,
        help="client connections open at once (0: no limit; default "
             f"{limits.max_connections}); see docs/security.md")
    opt("no-fast-path", action="store_true",
        help="serve inference requests through aiohttp too (no fast path; for comparison)")
    opt("version", action="store_true", help="print the version and exit")
    return p


def connection_limits(args: argparse.Namespace) -> ConnectionLimits:
    """The read timeouts and connection limit from the flags; ValueError when negative."""
    limits = ConnectionLimits(
        head_timeout=args.head_timeout, body_idle_timeout=args.body_idle_timeout,
        keepalive_timeout=args.keepalive_timeout, max_connections=args.max_connections,
    )
    for name in ("head_timeout", "body_idle_timeout", "keepalive_timeout", "max_connections"):
        if not getattr(limits, name) >= 0:  # NaN too
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be 0 or more")
    return limits


def render_diagnostics(diags: Sequence[Diagnostic], texts: Mapping[str, str] | None = None) -> str:
    """The compiler's text rendering (`file:line:col: key.path: message` + source line)."""
    from llama_swap.compiler.render import render_text

    return render_text(diags, texts or {}).rstrip("\n")


def obtain_plan(args: argparse.Namespace) -> Plan:
    """Load `--plan` or compile `--config`/`--config-dir`; warnings go to stderr."""
    if args.plan:
        return load_plan(args.plan)
    from llama_swap.compiler.pipeline import compile_paths

    result = compile_paths(args.config, args.config_dir, strict=args.strict)
    if result.warnings:
        print(render_diagnostics(result.warnings, result.texts), file=sys.stderr)
    return result.plan


def use_demo_config() -> str:
    """The packaged demo config's path, with the interpreter it needs named in the environment.

    The demo's models run the fake upstream with this very interpreter, so the demo works from
    a wheel or pipx install whatever PATH holds (the variable is inherited by reloads too).
    """
    os.environ["LLAMA_SWAP_DEMO_PYTHON"] = sys.executable
    return str(Path(__file__).resolve().parent / "demo" / "config.yaml")


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    if args.version:
        print(version_line())
        return EXIT_OK
    if args.demo:
        if args.plan or args.config or args.config_dir:
            parser.print_usage(sys.stderr)
            print("llama-swap: --demo cannot be combined with --config/--config-dir/--plan",
                  file=sys.stderr)
            return EXIT_USAGE
        args.config = use_demo_config()
    if args.plan and (args.config or args.config_dir):
        parser.print_usage(sys.stderr)
        print("llama-swap: --plan cannot be combined with --config/--config-dir", file=sys.stderr)
        return EXIT_USAGE
    if not (args.plan or args.config or args.config_dir):
        parser.print_usage(sys.stderr)
        print("llama-swap: at least one of --config, --config-dir or --plan must be provided",
              file=sys.stderr)
        return EXIT_USAGE
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        print("llama-swap: --tls-cert-file and --tls-key-file must be given together",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        parse_listen(args.listen, bool(args.tls_cert_file))
        limits = connection_limits(args)
    except ValueError as exc:
        print(f"llama-swap: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        plan = obtain_plan(args)
    except CompileError as exc:
        print(render_diagnostics(exc.diagnostics, getattr(exc, "texts", None)), file=sys.stderr)
        print("llama-swap: failed to load config", file=sys.stderr)
        return EXIT_CONFIG
    except PlanLoadError as exc:
        print(f"llama-swap: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        ctx = tls_context(args.tls_cert_file, args.tls_key_file) if args.tls_cert_file else None
    except (OSError, ssl.SSLError) as exc:
        print(f"llama-swap: cannot load TLS certificate/key: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from llama_swap.runtime.engine.reload import config_compiler, plan_file_loader

    compile_fn = plan_file_loader(args.plan) if args.plan else config_compiler(
        args.config, args.config_dir, strict=args.strict)
    watch = args.watch_config or args.watch_poll is not None  # --watch-poll implies watching
    print(f"llama-swap: running {native.state().describe()}", file=sys.stderr, flush=True)
    watch_files = [f for f in (args.plan or args.config,) if f] if watch else []
    watch_dirs = [args.config_dir] if watch and args.config_dir and not args.plan else []
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve(plan, ServeOptions(
                listen=args.listen, ssl_context=ctx, shutdown_timeout=args.shutdown_timeout,
                version=version(), on_listening=_announce, compile_fn=compile_fn,
                watch_files=watch_files, watch_dirs=watch_dirs, watch_poll=args.watch_poll,
                fast_path=not args.no_fast_path, limits=limits,
            )))
    except KeyboardInterrupt:
        return EXIT_OK
    except (OSError, ValueError) as exc:  # e.g. address in use, bad --listen
        print(f"llama-swap: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception:
        traceback.print_exc()
        print("llama-swap: internal error; please report it with the traceback above",
              file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK


def _announce(addresses: list[str]) -> None:
    print(f"llama-swap: listening on {' '.join(addresses)}", file=sys.stderr, flush=True)
    # What is alive now (modules, the plan, the app) lives as long as the process: the
    # cyclic collector need not scan it again at every full collection.
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
