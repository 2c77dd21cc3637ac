"""The matrix eviction policy (cheapest allowed set), alone and behind the fifo scheduler.

Sets arrive already expanded by the compiler (`MatrixSet.combinations`, in
solver order), so these tests build them directly.
"""

from __future__ import annotations

from types import MappingProxyType

from llama_swap.compiler.plan import Matrix, MatrixSet
from llama_swap.runtime.core.schedulers import FifoScheduler
from llama_swap.runtime.core.schedulers.base import Request
from llama_swap.runtime.core.swappers import MatrixSwapper
from tests.fakes import FakeEffects, Grant, StartSwap, make_models


def matrix(
    *sets: tuple[str, str, list[tuple[str, ...]]],
    costs: dict[str, int] | None = None,
    vars: dict[str, str] | None = None,
) -> MatrixSwapper:
    return MatrixSwapper(
        Matrix(
            vars=MappingProxyType(vars or {}),
            evictCosts=MappingProxyType(costs or {}),
            sets=tuple(MatrixSet(name, dsl, tuple(combos)) for name, dsl, combos in sets),
        )
    )


SOLO = matrix(("only_a", "a", [("a",)]), ("only_b", "b", [("b",)]))
PAIR = matrix(("pair", "a & b", [("a", "b")]))


def test_models_in_disjoint_sets_evict_each_other() -> None:
    assert SOLO.eviction_for("b", ["a"]) == ("a",)
    assert SOLO.eviction_for("a", ["b"]) == ("b",)


def test_models_sharing_a_set_coexist() -> None:
    assert PAIR.eviction_for("b", ["a"]) == ()


def test_requested_model_already_running_evicts_nothing_even_outside_any_set() -> None:
    assert SOLO.eviction_for("a", ["a", "b"]) == ()


def test_a_model_in_no_set_runs_alone() -> None:
    assert SOLO.eviction_for("z", ["a", "b"]) == ("a", "b")


def test_nothing_running_evicts_nothing() -> None:
    assert SOLO.eviction_for("a", []) == ()


def test_equal_cost_tie_goes_to_the_earlier_set() -> None:
    sw = matrix(("ab", "a & b", [("a", "b")]), ("ac", "a & c", [("a", "c")]))
    assert sw.eviction_for("a", ["b", "c"]) == ("c",)  # keeps b: set "ab" comes first


def test_ties_between_combinations_of_one_set_follow_expansion_order() -> None:
    sw = matrix(("v", "(g|q) & v", [("g", "v"), ("q", "v")]))
    assert sw.eviction_for("v", ["g", "q"]) == ("q",)


def test_a_higher_evict_cost_keeps_the_expensive_model_loaded() -> None:
    sets = (("ab", "a & b", [("a", "b")]), ("ac", "a & c", [("a", "c")]))
    sw = matrix(*sets, costs={"c": 5})
    assert sw.eviction_for("a", ["b", "c"]) == ("b",)


def test_evict_costs_may_be_keyed_by_var() -> None:
    sets = (("ab", "A & B", [("a", "b")]), ("ac", "A & C", [("a", "c")]))
    sw = matrix(*sets, costs={"C": 5}, vars={"A": "a", "B": "b", "C": "c"})
    assert sw.evict_cost("c") == 5 and sw.evict_cost("b") == 1
    assert sw.eviction_for("a", ["b", "c"]) == ("b",)


def test_cost_sums_over_every_running_model_outside_the_set() -> None:
    sw = matrix(
        ("big", "a & b & c", [("a", "b", "c")]),  # evicts x, y: cost 2
        ("solo", "a & x", [("a", "x")]),  # evicts b, c, y: cost 3
        costs={"x": 3},  # now "big" costs 4, "solo" costs 3
    )
    assert sw.eviction_for("a", ["b", "c", "x", "y"]) == ("b", "c", "y")


def test_evict_list_keeps_running_order() -> None:
    assert SOLO.eviction_for("z", ["b", "a"]) == ("b", "a")


def test_describe_reports_set_dsl_evictions_target_and_cost() -> None:
    sw = matrix(("with_tts", "(g|q) & v", [("g", "v"), ("q", "v")]))
    assert sw.describe("q", ["g", "v"]) == (
        'matrix: model=q set=with_tts dsl="(g|q) & v" evict=[g] target=[q v] cost=1'
    )
    assert sw.describe("q", []) == "matrix: model=q starting (no models running)"
    assert sw.describe("q", ["q"]) == 'matrix: model=q already running in set=with_tts dsl="(g|q) & v"'
    assert sw.describe("z", ["g"]) == 'matrix: model=z set=(none) dsl="" evict=[g] target=[z] cost=1'


# -- behind the fifo scheduler -------------------------------------------------------


def test_co_resident_models_load_in_parallel() -> None:
    fx = FakeEffects("a", "b")
    s = FifoScheduler(make_models("a", "b"), fx, PAIR)
    s.on_request(Request(1, "a"))
    s.on_request(Request(2, "b"))
    assert fx.take() == [StartSwap("a"), StartSwap("b")]


def test_incompatible_request_queues_until_the_first_is_done_then_evicts_it() -> None:
    fx = FakeEffects("a", "b")
    s = FifoScheduler(make_models("a", "b"), fx, SOLO)
    s.on_request(Request(1, "a"))
    s.on_request(Request(2, "b"))
    assert fx.take() == [StartSwap("a")]
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(1)]
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]
