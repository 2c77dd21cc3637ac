"""`swap-compile`: compile config fragments into a plan, or just check them.

The command only parses arguments, calls the pipeline, renders and picks the
exit code.  Exit codes (documented here and in `--help`):

    0  the config is valid (the plan was written unless --check)
    1  the config is invalid (every problem was reported on stderr)
    2  usage error (bad flags, no --config/--config-dir)
    3  internal error: a bug in swap-compile, reported with a "please report" line

A bad config never produces a traceback.  Imports are lazy (no aiohttp, no
jsonschema until validation) so `swap-compile --check` starts quickly.
The Go spellings `-config FILE` and `-config-dir DIR` are accepted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from llama_swap.compiler.plan import Plan

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
_LONG_FLAGS = (
    "config",
    "config-dir",
    "output",
    "format",
    "check",
    "errors",
    "show-secrets",
    "strict",
)


def go_style_args(args: Sequence[str]) -> list[str]:
    """Rewrite single-dash long flags (`-config x`, `-config-dir=x`) to the double-dash form."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + list(args[i:])
        name = arg[1:].split("=", 1)[0]
        if arg.startswith("-") and not arg.startswith("--") and name in _LONG_FLAGS:
            arg = "-" + arg
        out.append(arg)
    return out


def redact(plan: Plan) -> Plan:
    """The plan with `apiKeys` and peer `apiKey`s replaced by compiler.plan.REDACTED."""
    from dataclasses import replace
    from types import MappingProxyType

    from llama_swap.compiler.plan import REDACTED

    peers = {pid: replace(p, apiKey=REDACTED) if p.apiKey else p for pid, p in plan.peers.items()}
    settings = replace(plan.settings, apiKeys=tuple(REDACTED for _ in plan.settings.apiKeys))
    return replace(plan, settings=settings, peers=MappingProxyType(peers))


def _plan_text(plan: Plan, fmt: str) -> str:
    from llama_swap.compiler.plan import plan_to_dict, plan_to_json

    if fmt == "yaml":
        import yaml  # type: ignore[import-untyped, unused-ignore]

        text: str = yaml.safe_dump(
            plan_to_dict(plan), sort_keys=False, allow_unicode=True, width=1000
        )
        return text
    return plan_to_json(plan)


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit codes: 0 valid, 1 invalid config, 2 usage error, 3 internal error.",
)
@click.option("--config", metavar="FILE", help="A YAML config file (merged first).")
@click.option(
    "--config-dir",
    metavar="DIR",
    help="A directory whose top-level *.yml/*.yaml files are merged after FILE, sorted by name.",
)
@click.option("--output", "-o", metavar="FILE", help="Write the plan to FILE instead of stdout.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "yaml"]),
    default="json",
    show_default=True,
    help="Plan output format.",
)
@click.option(
    "--check", is_flag=True, help="Only validate: print nothing on stdout, exit 0 when valid."
)
@click.option(
    "--errors",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="How errors and warnings are printed on stderr (github: Actions annotations).",
)
@click.option(
    "--show-secrets", is_flag=True, help="Print apiKeys and peer apiKey instead of redacting them."
)
@click.option("--strict", is_flag=True, help="Treat warnings (unknown keys, ...) as errors.")
@click.pass_context
def command(
    ctx: click.Context,
    config: str | None,
    config_dir: str | None,
    output: str | None,
    fmt: str,
    check: bool,
    errors: str,
    show_secrets: bool,
    strict: bool,
) -> int:
    """Compile llama-swap YAML config fragments into a resolved JSON plan."""
    if not config and not config_dir:
        raise click.UsageError("at least one of --config or --config-dir is required", ctx)
    from llama_swap.compiler.diagnostics import CompileError
    from llama_swap.compiler.pipeline import compile_paths
    from llama_swap.compiler.render import render

    try:
        result = compile_paths(config, config_dir, strict=strict)
    except CompileError as exc:
        sys.stderr.write(render(exc.diagnostics, errors, getattr(exc, "texts", {})))
        return EXIT_INVALID
    if result.warnings:
        sys.stderr.write(render(result.warnings, errors, result.texts))
    if check:
        return EXIT_OK
    plan = result.plan if show_secrets else redact(result.plan)
    text = _plan_text(plan, fmt)
    if output:
        _write(output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    args = go_style_args(sys.argv[1:] if argv is None else argv)
    try:
        code = command.main(args=args, prog_name="swap-compile", standalone_mode=False)
    except click.exceptions.UsageError as exc:  # also BadParameter, NoSuchOption
        exc.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        sys.stderr.write("swap-compile: aborted\n")
        return EXIT_INTERNAL
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug: never a traceback, always a way to report it
        if os.environ.get("SWAP_COMPILE_DEBUG"):
            import traceback

            traceback.print_exc()
        sys.stderr.write(
            f"swap-compile: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in swap-compile, not a problem in your config; please report it to the "
            "llama-swap-py issue tracker with the config that triggers it "
            "(set SWAP_COMPILE_DEBUG=1 for a traceback).\n"
        )
        return EXIT_INTERNAL
    return code if isinstance(code, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
