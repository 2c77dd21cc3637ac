"""The request policy for profile pins and selectors (runtime/core: profiles, selectors,
model_choice), pure: plans in, decisions out.

Ports the Go original's selector and profile server tests that concern the decision
(TestServer_SelectorStrategyPin, _SelectorStrategyWarm, _SelectorStrategySpillover,
_SelectorStrategySpillover_RemoteModels, _SpilloverReservations,
_AllSpilloverTargetsStopping, _ProfileRunsFirst, TestServer_ProfileAPI's request checks,
TestServer_ProfileMiddleware_RewriteUpstreamPath, TestServer_Profile_ModelListings)."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from llama_swap.compiler.pipeline import compile_sources
from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.model_choice import ModelChoice, choose_model
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.profiles import (
    UpstreamPin,
    listed_pins,
    pinned_models,
    profiles_body,
    requested_profile,
    upstream_pin,
)
from llama_swap.runtime.core.selectors import SpilloverCounts, release
from llama_swap.runtime.http.render.models_list import models_list

READY, STARTING, STOPPED, STOPPING = (
    ProcessState.READY,
    ProcessState.STARTING,
    ProcessState.STOPPED,
    ProcessState.STOPPING,
)

CONFIG = """
models:
  a: {cmd: "srv ${PORT}"}
  b: {cmd: "srv ${PORT}", aliases: [bee]}
  c: {cmd: "srv ${PORT}"}
  big: {cmd: "srv ${PORT}"}
groups:
  pool: {swap: false, exclusive: false, members: [a, b, c]}
peers:
  remote: {proxy: "http://remote.example", models: [r1, r2]}
selectors:
  pinned: {strategy: pin, targets: [b, a]}
  warm: {strategy: warm, targets: [a, bee, c]}
  spill: {strategy: spillover, targets: [a, b, c], settings: {spillover: 2}}
  remote-spill: {strategy: spillover, targets: [remote/r1, r2]}
  hidden: {strategy: pin, targets: [a], unlisted: true}
profiles:
  coding:
    description: Coding setup
    pins:
      llm-code: big
      llm-plan: spill
      image-gen: ~
      a: c
      remote: b
"""


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_sources([("c.yaml", CONFIG)], env={}).plan


def pick(
    plan: Plan,
    name: str,
    states: dict[str, ProcessState] | None = None,
    counts: SpilloverCounts | None = None,
    profile: str | None = None,
) -> ModelChoice | RouteError:
    return choose_model(plan, profile, name, states or {}, counts or SpilloverCounts())


def target(choice: ModelChoice | RouteError) -> str | None:
    assert isinstance(choice, ModelChoice), choice
    return choice.rewrite


def test_names_that_are_no_selector_and_no_pin_are_left_alone(plan: Plan) -> None:
    for name in ("a", "bee", "remote/r1", "nothing"):
        assert pick(plan, name) == ModelChoice()


def test_pin_strategy_always_takes_the_first_target(plan: Plan) -> None:
    assert target(pick(plan, "pinned")) == "b"
    assert target(pick(plan, "pinned", {"a": READY})) == "b"


def test_warm_takes_the_first_ready_then_the_first_starting_then_the_first(plan: Plan) -> None:
    assert target(pick(plan, "warm")) == "a"
    assert target(pick(plan, "warm", {"c": READY, "b": READY})) == "bee"  # as configured
    assert target(pick(plan, "warm", {"c": STARTING})) == "c"
    assert target(pick(plan, "warm", {"c": STARTING, "a": STOPPING})) == "c"
    assert target(pick(plan, "warm", {"a": STOPPING})) == "a"  # stopping is not running


def test_spillover_fills_a_target_up_to_its_setting_then_spills_to_the_next(plan: Plan) -> None:
    counts = SpilloverCounts()
    first = pick(plan, "spill", {}, counts)
    assert target(first) == "a"  # nothing active: the first cold target
    assert target(pick(plan, "spill", {"a": STARTING}, counts)) == "a"
    third = pick(plan, "spill", {"a": STARTING}, counts)
    assert target(third) == "b"  # a holds 2 = spillover: spill to the next cold one
    assert counts.count("spill", "a") == 2 and counts.count("spill", "b") == 1
    assert isinstance(first, ModelChoice)
    release(counts, first.choice)
    # all ready, a and b each hold one: c (0) is the least busy active target
    assert target(pick(plan, "spill", {"a": READY, "b": READY, "c": READY}, counts)) == "c"


def test_spillover_ties_rotate_and_a_full_set_without_cold_targets_takes_the_least_busy(
    plan: Plan,
) -> None:
    counts = SpilloverCounts()
    ready = {"a": READY, "b": READY, "c": READY}
    firsts = [target(pick(plan, "spill", ready, counts)) for _ in range(3)]
    assert sorted(firsts) == ["a", "b", "c"]  # equal counts rotate over the active targets
    more = [target(pick(plan, "spill", ready, counts)) for _ in range(6)]
    assert sorted(more) == ["a", "a", "b", "b", "c", "c"]  # past the setting: least busy
    assert all(counts.count("spill", m) == 3 for m in "abc")


def test_spillover_skips_stopping_targets_and_fails_when_all_stop(plan: Plan) -> None:
    stopping = {"a": STOPPING, "b": STOPPING, "c": STOPPING}
    error = pick(plan, "spill", stopping)
    assert error == RouteError(503, 'selector "spill" has no available spillover targets')
    assert target(pick(plan, "spill", {"a": STOPPING})) == "b"


def test_spillover_over_peers_counts_only_its_own_requests(plan: Plan) -> None:
    counts = SpilloverCounts()
    assert target(pick(plan, "remote-spill", {}, counts)) == "remote/r1"  # nothing active
    assert target(pick(plan, "remote-spill", {}, counts)) == "r2"  # r1 holds 1: spill
    assert target(pick(plan, "remote-spill", {}, counts)) in ("remote/r1", "r2")  # least busy
    assert (
        counts.count("remote-spill", "remote/r1") + counts.count("remote-spill", "remote/r2") == 3
    )
    assert counts.count("remote-spill", "remote/r2") == 1


def test_a_release_gives_back_exactly_what_was_taken(plan: Plan) -> None:
    counts = SpilloverCounts()
    choices = [pick(plan, "spill", {}, counts) for _ in range(2)]
    for c in choices:
        assert isinstance(c, ModelChoice)
        release(counts, c.choice)
    assert all(counts.count("spill", m) == 0 for m in "abc")
    pinned = pick(plan, "pinned", {}, counts)
    assert isinstance(pinned, ModelChoice) and pinned.choice is not None
    assert not pinned.choice.reserved  # pin and warm take nothing


def test_the_active_profile_rewrites_pins_before_selectors_run(plan: Plan) -> None:
    assert target(pick(plan, "llm-code", profile="coding")) == "big"
    assert target(pick(plan, "llm-plan", profile="coding")) == "a"  # pin -> selector -> a
    assert target(pick(plan, "image-gen", profile="coding")) == ""  # disabled: no model
    assert target(pick(plan, "a", profile="coding")) == "c"  # a pin key shadows a model
    assert pick(plan, "llm-code") == ModelChoice()  # no profile active: nothing pinned


def test_upstream_pins_take_the_longest_matching_key() -> None:
    config = CONFIG.replace("      remote: b\n", "      remote: b\n      remote/x: a\n")
    plan = compile_sources([("c.yaml", config)], env={}).plan
    assert upstream_pin(plan, "coding", "remote/x/v1/models") == UpstreamPin("remote/x", "a")
    assert upstream_pin(plan, "coding", "remote/r2/health") == UpstreamPin("remote", "b")
    assert upstream_pin(plan, "coding", "remotely/x") is None
    assert upstream_pin(plan, "coding", "image-gen") == UpstreamPin("image-gen", "")
    assert upstream_pin(plan, None, "llm-code/health") is None


def test_pinned_models_are_the_local_models_the_active_pins_lead_to(plan: Plan) -> None:
    assert pinned_models(plan, None) == frozenset()
    # big directly, a/b/c through the spill selector, c through the `a` pin, b through `remote`
    assert pinned_models(plan, "coding") == frozenset({"big", "a", "b", "c"})


def test_profile_requests_are_checked_as_the_original_checks_them(plan: Plan) -> None:
    assert requested_profile(plan, {"name": "coding"}) == "coding"
    assert requested_profile(plan, {"name": None}) is None
    assert requested_profile(plan, {"name": ""}) is None
    assert requested_profile(plan, [1]) == RouteError(400, "invalid profile request")
    assert requested_profile(plan, {}) == RouteError(400, "profile name is required")
    assert requested_profile(plan, {"name": 3}) == RouteError(
        400, "profile name must be a string or null"
    )
    assert requested_profile(plan, {"name": "x"}) == RouteError(404, 'profile "x" not found')
    assert profiles_body(plan, "coding") == {
        "active": "coding",
        "profiles": [
            {
                "id": "coding",
                "description": "Coding setup",
                "pins": {
                    "a": "c",
                    "image-gen": "",
                    "llm-code": "big",
                    "llm-plan": "spill",
                    "remote": "b",
                },
            }
        ],
    }


def test_listings_show_selectors_peer_full_names_and_new_pin_keys(plan: Plan) -> None:
    assert listed_pins(plan, "coding") == ["llm-code", "llm-plan", "remote"]
    doc = models_list(plan, 0, "coding", {"b": READY})
    by_id = {r["id"]: r for r in doc["data"]}
    assert sorted(by_id) == [
        "a", "b", "big", "c", "llm-code", "llm-plan", "pinned", "remote",
        "remote-spill", "remote/r1", "remote/r2", "spill", "warm",
    ]  # fmt: skip
    assert by_id["pinned"]["status"] == {"value": "loaded"}  # its first target b is ready
    assert by_id["spill"]["meta"]["llamaswap"] == {
        "type": "selector", "strategy": "spillover", "targets": ["a", "b", "c"], "spillover": 2,
    }  # fmt: skip
    assert by_id["remote-spill"]["status"] == {"value": "unloaded"}  # peers never count
    assert by_id["remote/r1"]["name"] == "remote: r1"
    assert by_id["llm-code"]["meta"] == {"llamaswap": {"type": "profile"}}
    assert "image-gen" not in by_id and "hidden" not in by_id


def test_no_profile_lists_no_pins(plan: Plan) -> None:
    ids = [r["id"] for r in models_list(plan, 0)["data"]]
    assert "llm-code" not in ids
    assert plan.profiles["coding"].pins == MappingProxyType(
        {"a": "c", "image-gen": "", "llm-code": "big", "llm-plan": "spill", "remote": "b"}
    )


def test_the_router_holds_the_active_profile_and_a_reload_keeps_it_while_it_exists(
    plan: Plan,
) -> None:
    from llama_swap.runtime.engine.logs import LogBuffer
    from llama_swap.runtime.engine.router import Router

    events: list[dict[str, object]] = []
    router = Router(plan, upstream_log=LogBuffer("upstream"), on_event=events.append)
    assert router.active_profile is None and router.pinned_models() == frozenset()
    assert router.set_active_profile("coding") is True
    assert router.set_active_profile("coding") is False  # the same value: no event
    assert router.pinned_models() == frozenset({"big", "a", "b", "c"})
    with pytest.raises(KeyError):
        router.set_active_profile("nope")
    router.plan = compile_sources([("c.yaml", CONFIG + "  other: {pins: {x: a}}\n")], env={}).plan
    assert router.active_profile == "coding"  # still defined: kept
    router.plan = compile_sources([("c.yaml", CONFIG.split("profiles:")[0])], env={}).plan
    assert router.active_profile is None and router.pinned_models() == frozenset()
    assert [e for e in events if e["type"] == "profileChanged"] == [
        {"type": "profileChanged", "active": "coding"},
        {"type": "profileChanged", "active": None},
    ]
