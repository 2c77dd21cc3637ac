"""The plan diff decides what a hot reload does to each model's process (pure, no I/O)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from llama_swap.compiler.plan import (
    Capabilities,
    Filters,
    Group,
    Model,
    Peer,
    Plan,
    Profile,
    Routing,
    Selector,
    Settings,
    Timeouts,
    plan_from_json,
    plan_to_json,
)
from llama_swap.runtime.core.plan_diff import LIVE_FIELDS, RESTART_FIELDS, diff_plans, plan_digest


def model(mid: str, port: int = 5800, **kw: object) -> Model:
    base: dict[str, object] = dict(
        id=mid,
        cmd=("server", "--port", str(port)),
        cmdStop=None,
        proxy=f"http://127.0.0.1:{port}",
        checkEndpoint="/health",
        ttl=0,
    )
    base.update(kw)
    return Model(**base)  # type: ignore[arg-type]


def plan(*models: Model, **kw: object) -> Plan:
    return Plan(models=MappingProxyType({m.id: m for m in sorted(models, key=lambda m: m.id)}), **kw)  # type: ignore[arg-type]


def test_identical_plans_keep_every_model_and_have_equal_digests() -> None:
    p = plan(model("a"), model("b", 5801))
    d = diff_plans(p, plan_from_json(plan_to_json(p)))
    assert d.kept == ("a", "b")
    assert (d.added, d.removed, d.changed_restart, d.changed_live) == ((), (), (), ())
    assert d.identical and not d.routing_changed and not d.peers_changed
    assert d.settings_changed == ()


def test_added_and_removed_models() -> None:
    d = diff_plans(plan(model("a"), model("b", 5801)), plan(model("b", 5801), model("c", 5802)))
    assert d.added == ("c",)
    assert d.removed == ("a",)
    assert d.kept == ("b",)
    assert d.stale == ("a",)
    assert not d.identical


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cmd", ("server", "--port", "5800", "--ctx-size", "4096")),
        ("cmdStop", ("kill", "${PID}")),
        ("proxy", "http://127.0.0.1:5900"),
        ("checkEndpoint", "none"),
        ("env", ("CUDA_VISIBLE_DEVICES=1",)),
        ("timeouts", Timeouts(connect=5)),
    ],
)
def test_process_defining_fields_need_a_restart(field: str, value: object) -> None:
    old = plan(model("a"), model("b", 5801))
    new = plan(dataclasses.replace(model("a"), **{field: value}), model("b", 5801))
    d = diff_plans(old, new)
    assert d.changed_restart == ("a",)
    assert d.changed_live == ()
    assert d.kept == ("b",)
    assert d.changed_fields["a"] == (field,)
    assert d.stale == ("a",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ttl", 300),
        ("aliases", ("gpt-4o",)),
        ("filters", Filters(stripParams=("temperature",))),
        ("metadata", MappingProxyType({"family": "llama"})),
        ("concurrencyLimit", 3),
        ("name", "Llama"),
        ("description", "a model"),
        ("unlisted", True),
        ("useModelName", "upstream-name"),
        ("sendLoadingState", True),
        ("capabilities", Capabilities(tools=True)),
        ("unloadTimeout", 30),
    ],
)
def test_request_handling_fields_apply_live(field: str, value: object) -> None:
    d = diff_plans(plan(model("a")), plan(dataclasses.replace(model("a"), **{field: value})))
    assert d.changed_live == ("a",)
    assert d.changed_restart == ()
    assert d.changed_fields["a"] == (field,)
    assert d.stale == ()


def test_a_restart_change_wins_over_live_changes_in_the_same_model() -> None:
    new_a = dataclasses.replace(model("a"), ttl=60, env=("X=1",), name="A")
    d = diff_plans(plan(model("a")), plan(new_a))
    assert d.changed_restart == ("a",)
    assert d.changed_live == ()
    assert d.changed_fields["a"] == ("ttl", "env", "name")  # Model field order
    assert d.changed == ("a",)


def test_every_model_field_is_classified_exactly_once() -> None:
    names = {f.name for f in dataclasses.fields(Model)} - {"id"}
    assert names == RESTART_FIELDS | LIVE_FIELDS
    assert not RESTART_FIELDS & LIVE_FIELDS


def test_ids_are_partitioned_and_sorted() -> None:
    old = plan(model("z"), model("m", 5801), model("a", 5802), model("k", 5803))
    new = plan(
        dataclasses.replace(model("z"), ttl=5),
        dataclasses.replace(model("m", 5801), cmd=("other",)),
        model("b", 5804),
        model("k", 5803),
    )
    d = diff_plans(old, new)
    groups = [d.added, d.removed, d.kept, d.changed_restart, d.changed_live]
    flat = [mid for g in groups for mid in g]
    assert sorted(flat) == sorted(set(old.models) | set(new.models))
    assert len(flat) == len(set(flat))
    assert all(list(g) == sorted(g) for g in groups)
    assert (d.added, d.removed, d.kept, d.changed_restart, d.changed_live) == (
        ("b",),
        ("a",),
        ("k",),
        ("m",),
        ("z",),
    )


def test_scheduler_and_group_changes_are_routing_changes_not_model_changes() -> None:
    a, b = model("a"), model("b", 5801)
    old = plan(a, b, routing=Routing(scheduler="serial"))
    assert diff_plans(old, plan(a, b, routing=Routing(scheduler="fifo"))).routing_changed
    grouped = Routing(groups=MappingProxyType({"g": Group("g", ("a", "b"), swap=False)}))
    d = diff_plans(old, plan(a, b, routing=grouped))
    assert d.routing_changed
    assert d.kept == ("a", "b")
    regrouped = Routing(groups=MappingProxyType({"g": Group("g", ("a",), swap=False)}))
    assert diff_plans(plan(a, b, routing=grouped), plan(a, b, routing=regrouped)).routing_changed


def test_settings_and_peers_are_reported() -> None:
    a = model("a")
    old = plan(a)
    new = plan(
        a,
        settings=Settings(healthCheckTimeout=30),
        peers=MappingProxyType({"p": Peer(id="p", proxy="http://10.0.0.2:8080", models=("x",))}),
    )
    d = diff_plans(old, new)
    assert d.settings_changed == ("healthCheckTimeout",)
    assert d.peers_changed
    assert d.kept == ("a",)


def test_digest_is_sha256_of_the_canonical_json_and_stable() -> None:
    import hashlib

    p = plan(model("a"))
    assert plan_digest(p) == hashlib.sha256(plan_to_json(p).encode()).hexdigest()
    assert plan_digest(p) == plan_digest(plan_from_json(plan_to_json(p)))
    assert plan_digest(p) != plan_digest(plan(model("a", ttl=1)))


def test_summary_is_one_line_with_digests_and_counts() -> None:
    old = plan(model("a"), model("b", 5801), model("c", 5802))
    new = plan(model("a"), dataclasses.replace(model("b", 5801), ttl=9), model("d", 5803))
    d = diff_plans(old, new)
    line = d.summary()
    assert "\n" not in line
    assert f"{d.old_digest[:12]} -> {d.new_digest[:12]}" in line
    assert "added 1, changed 1 (0 restart), removed 1, kept 1" in line


def test_as_dict_is_json_ready() -> None:
    import json

    d = diff_plans(plan(model("a")), plan(model("a", env=("X=1",))))
    out = json.loads(json.dumps(d.as_dict()))
    assert out["changedRestart"] == ["a"]
    assert out["changedFields"] == {"a": ["env"]}


def test_selector_and_profile_changes_restart_nothing() -> None:
    a = model("a")
    sel = Selector(id="s", strategy="pin", targets=("a",), resolved=("a",))
    prof = Profile(id="p", description="", pins=MappingProxyType({"x": "a"}))
    new = plan(
        a,
        selectors=MappingProxyType({"s": sel}),
        profiles=MappingProxyType({"p": prof}),
    )
    d = diff_plans(plan(a), new)
    assert d.selectors_changed and d.profiles_changed
    assert d.kept == ("a",) and d.stale == ()
    assert "selectors changed" in d.summary() and "profiles changed" in d.summary()
    assert d.as_dict()["selectorsChanged"] is True
