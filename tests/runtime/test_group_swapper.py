"""The group eviction policy (swap/exclusive/persistent), alone and behind the fifo scheduler."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from llama_swap.compiler.plan import Group, Matrix, MatrixSet, Plan, Routing
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers import FifoScheduler
from llama_swap.runtime.core.schedulers.base import Request
from llama_swap.runtime.core.swappers import (
    DEFAULT_GROUP,
    GroupSwapper,
    MatrixSwapper,
    make_swapper,
)
from tests.fakes import FakeEffects, Grant, StartSwap, make_models


def groups(*gs: Group) -> MappingProxyType[str, Group]:
    return MappingProxyType({g.name: g for g in gs})


def swapper(*gs: Group, models: tuple[str, ...] = ()) -> GroupSwapper:
    return GroupSwapper(groups(*gs), models)


# -- the eviction table ---------------------------------------------------------


def test_swap_group_evicts_its_running_sibling() -> None:
    sw = swapper(Group("g", ("a", "b")))
    assert sw.eviction_for("b", ["a"]) == ("a",)


def test_non_swap_group_keeps_its_siblings() -> None:
    sw = swapper(Group("g", ("a", "b", "c"), swap=False))
    assert sw.eviction_for("c", ["a", "b"]) == ()


def test_exclusive_target_evicts_other_groups() -> None:
    sw = swapper(Group("g1", ("a",)), Group("g2", ("b", "c"), swap=False))
    assert sw.eviction_for("a", ["b", "c"]) == ("b", "c")


def test_persistent_group_survives_an_exclusive_load() -> None:
    sw = swapper(Group("g1", ("a",)), Group("keep", ("p",), persistent=True), Group("g3", ("x",)))
    assert sw.eviction_for("a", ["p", "x"]) == ("x",)


def test_persistent_does_not_protect_inside_its_own_group() -> None:
    sw = swapper(Group("keep", ("p", "q"), persistent=True))
    assert sw.eviction_for("q", ["p"]) == ("p",)


def test_non_exclusive_target_leaves_even_exclusive_groups_running() -> None:
    sw = swapper(Group("excl", ("a",)), Group("side", ("b",), exclusive=False))
    assert sw.eviction_for("b", ["a"]) == ()
    assert sw.eviction_for("a", ["b"]) == ("b",)  # the other way round it evicts


def test_non_exclusive_non_swap_group_evicts_nothing() -> None:
    sw = swapper(Group("g", ("a", "b"), swap=False, exclusive=False), Group("o", ("x",)))
    assert sw.eviction_for("a", ["b", "x"]) == ()


def test_evict_list_keeps_running_order_and_skips_the_target() -> None:
    sw = swapper(Group("g", ("a", "b", "c", "d")))
    assert sw.eviction_for("b", ["d", "a", "b", "c"]) == ("d", "a", "c")


def test_models_outside_every_group_form_the_default_group() -> None:
    sw = swapper(Group("side", ("s",), exclusive=False), models=("a", "b", "s"))
    assert sw.group_of("a").name == DEFAULT_GROUP
    assert sw.group_of("a").members == ("a", "b")
    assert sw.eviction_for("a", ["b", "s"]) == ("b", "s")  # default: swap + exclusive


def test_explicit_default_group_from_the_plan_is_used_as_is() -> None:
    sw = swapper(Group(DEFAULT_GROUP, ("a", "b"), swap=False), models=("a", "b"))
    assert sw.eviction_for("a", ["b"]) == ()


def test_with_no_groups_only_one_model_runs_at_a_time() -> None:
    sw = swapper(models=("a", "b", "c"))
    assert sw.eviction_for("c", ["a", "b"]) == ("a", "b")


def test_describe_names_group_and_evictions() -> None:
    sw = swapper(Group("g", ("a", "b")))
    assert sw.describe("b", ["a"]) == "group: model=b group=g evict=[a]"
    assert sw.describe("b", []) == "group: model=b group=g starting (no models running)"


# -- behind the fifo scheduler ------------------------------------------------------


def fifo_with(sw: GroupSwapper, *models: str, ready: tuple[str, ...] = ()):
    fx = FakeEffects(*models, ready=ready)
    return FifoScheduler(make_models(*models), fx, sw), fx


def test_same_group_requests_serialise_before_any_process_starts() -> None:
    s, fx = fifo_with(swapper(Group("g", ("a", "b"))), "a", "b")
    s.on_request(Request(1, "a"))
    fx.set_state("a", ProcessState.STOPPED)  # the swap has not reached `starting` yet
    s.on_request(Request(2, "b"))  # a counts as running: it is an active swap's target
    assert fx.take() == [StartSwap("a")]
    assert [q.id for q in s.queued()] == [2]


def test_two_non_exclusive_groups_load_in_parallel() -> None:
    sw = swapper(Group("g1", ("a",), exclusive=False), Group("g2", ("b",), exclusive=False))
    s, fx = fifo_with(sw, "a", "b")
    s.on_request(Request(1, "a"))
    s.on_request(Request(2, "b"))
    assert fx.take() == [StartSwap("a"), StartSwap("b")]


def test_swap_group_stops_the_previous_member_once_idle() -> None:
    s, fx = fifo_with(swapper(Group("g", ("a", "b"))), "a", "b", ready=("a",))
    s.on_request(Request(1, "b"))
    fx.finish_swap(s, "b")
    assert fx.take() == [StartSwap("b", evict=("a",)), Grant(1)]
    assert fx.running_models() == ["b"]


# -- the factory ------------------------------------------------------------------


def test_make_swapper_picks_the_policy_the_plan_names() -> None:
    models = make_models("a", "b")
    group_plan = Plan(routing=Routing(groups=groups(Group("g", ("a", "b")))), models=models)
    assert isinstance(make_swapper(group_plan), GroupSwapper)
    matrix = Matrix(MappingProxyType({}), MappingProxyType({}), (MatrixSet("s", "a", (("a",),)),))
    matrix_plan = Plan(routing=Routing(router="matrix", matrix=matrix), models=models)
    assert isinstance(make_swapper(matrix_plan), MatrixSwapper)


def test_make_swapper_rejects_a_matrix_router_without_a_matrix() -> None:
    with pytest.raises(ValueError, match="no matrix"):
        make_swapper(Plan(routing=Routing(router="matrix")))
