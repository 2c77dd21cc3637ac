"""hooks.on_startup.preload: cleaned, aliases resolved, unknown names are errors here."""

from __future__ import annotations

from .resolve_util import errors_of, plan_of

MODELS = """
models:
  a: {cmd: "srv ${PORT}", aliases: [alpha]}
  b: {cmd: "srv ${PORT}"}
peers:
  p: {proxy: "http://p:1", models: [remote-only]}
"""


def test_preload_trims_skips_blanks_resolves_aliases_keeps_order_and_duplicates() -> None:
    plan = plan_of(MODELS + "hooks: {on_startup: {preload: [' b ', '', alpha, a]}}")
    assert plan.preload == ("b", "a", "a")


def test_preload_unknown_and_peer_names_are_errors() -> None:
    assert errors_of(MODELS + "hooks: {on_startup: {preload: [ghost, remote-only]}}") == [
        (
            "hooks.on_startup.preload[0]",
            "cannot preload 'ghost': no local model or alias has that name",
        ),
        (
            "hooks.on_startup.preload[1]",
            "cannot preload 'remote-only': it is served by peer 'p', not a local model",
        ),
    ]


def test_no_hooks_means_nothing_to_preload() -> None:
    assert plan_of(MODELS).preload == ()
